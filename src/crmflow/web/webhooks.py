"""Push notification receivers (no sign-in: each notification proves itself).

=================================  ==============================================
``POST /webhooks/google/calendar``  Google Calendar channel notifications: 200 at
                                    once (a change marks the calendar due, the
                                    scheduler syncs it), 404 for an unknown or
                                    forged channel (Google counts it as failed and
                                    does not retry), never any work for those
=================================  ==============================================

See :mod:`crmflow.services.push`. Answers carry no body; nothing from the
request is echoed.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from crmflow.bootstrap import Services
from crmflow.services.push import GOOGLE_CALENDAR_PATH, receive_google_calendar
from crmflow.store.push import Delivery

router = APIRouter(include_in_schema=False)


@router.post(GOOGLE_CALENDAR_PATH)
async def google_calendar(request: Request) -> Response:
    """One Google Calendar notification (``X-Goog-*`` headers, no body)."""
    services: Services = request.app.state.services
    headers = request.headers
    result = await receive_google_calendar(
        services.system_db,
        channel_id=headers.get("x-goog-channel-id"),
        token=headers.get("x-goog-channel-token"),
        resource_id=headers.get("x-goog-resource-id"),
        resource_state=headers.get("x-goog-resource-state"),
        message_number=headers.get("x-goog-message-number"),
    )
    return Response(status_code=404 if result is Delivery.UNKNOWN else 200)
