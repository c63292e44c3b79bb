"""Push notification receivers (no sign-in: each notification proves itself).

=================================  ==============================================
``POST /webhooks/google/calendar``  Google Calendar channel notifications: 200 at
                                    once (a change marks the calendar due, the
                                    scheduler syncs it), 404 for an unknown or
                                    forged channel (Google counts it as failed and
                                    does not retry), never any work for those
``POST /webhooks/microsoft``        Graph change and lifecycle notifications:
                                    ``?validationToken=`` is the handshake (200,
                                    the token as text/plain); a collection with
                                    a genuine item is 202 at once, one with none
                                    (unknown subscriptions, wrong
                                    ``clientState``) 403, a body that is not a
                                    collection 400; never any work for those
=================================  ==============================================

See :mod:`crmflow.services.push`. Answers carry no body (but the validation
token Graph asks to have echoed); nothing else from the request is echoed.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Request, Response

from crmflow.bootstrap import Services
from crmflow.services.push import (
    GOOGLE_CALENDAR_PATH,
    MAX_VALIDATION_TOKEN,
    MICROSOFT_PATH,
    receive_google_calendar,
    receive_graph,
)
from crmflow.store.push import Delivery

router = APIRouter(include_in_schema=False)

#: the largest notification collection read (Graph batches stay far below)
MAX_BODY = 1_000_000


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
        known=request.app.state.known_channels,
    )
    if result is Delivery.ACCEPTED:
        services.pushed()
    return Response(status_code=404 if result is Delivery.UNKNOWN else 200)


@router.post(MICROSOFT_PATH)
async def microsoft(request: Request) -> Response:
    """A Graph validation request or a collection of notifications."""
    token = request.query_params.get("validationToken")
    if token is not None:
        # the query parser has URL-decoded it, as Graph requires
        if not token or len(token) > MAX_VALIDATION_TOKEN:
            return Response(status_code=400)
        return Response(
            token,
            media_type="text/plain; charset=utf-8",
            headers={"X-Content-Type-Options": "nosniff"},
        )
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        return Response(status_code=413)
    raw = bytearray()
    async for chunk in request.stream():  # chunked bodies too: never past the cap
        raw += chunk
        if len(raw) > MAX_BODY:
            return Response(status_code=413)
    services: Services = request.app.state.services
    try:
        batch = await receive_graph(
            services.system_db,
            json.loads(bytes(raw)),
            known=request.app.state.known_channels,
        )
    except ValueError:  # not JSON, or MalformedNotification
        return Response(status_code=400)
    if batch.acted:
        services.pushed()
    return Response(status_code=202 if batch.genuine else 403)
