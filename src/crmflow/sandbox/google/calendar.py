"""Calendar API v3 over HTTP: calendarList, calendars.get, events.*, channels.stop.

Handlers translate :class:`~crmflow.sandbox.google.api.ApiCall` into
:class:`~crmflow.sandbox.google.calendars.Calendars` operations and render
Google's JSON. Conditional requests follow the version-resources guide:
``If-None-Match`` equal to the etag on GET -> 304; ``If-Match`` different from
it on PUT/PATCH/DELETE -> 412 ``conditionNotMet``.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

from starlette.responses import Response

from crmflow.sandbox.faults import FaultKind
from crmflow.sandbox.google import errors
from crmflow.sandbox.google.api import ApiCall, ApiService, JsonResult
from crmflow.sandbox.google.calendardata import StoredCalendar
from crmflow.sandbox.google.eventtime import (
    TimeError,
    format_updated,
    parse_rfc3339,
    zone,
)
from crmflow.sandbox.google.listing import DEFAULT_PAGE_SIZE, ListQuery, ListResult
from crmflow.sandbox.specs.discovery import bundled_document

__all__ = ["calendar_service"]

#: calendarList.list: default 100, max 250 (discovery)
CALENDAR_LIST_MAX = 250


def _time_param(call: ApiCall, name: str) -> datetime | None:
    value = call.params.get(name)
    if value is None:
        return None
    try:
        # "Must be an RFC3339 timestamp with mandatory time zone offset ...
        # Milliseconds may be provided but are ignored."
        return parse_rfc3339(str(value)).replace(microsecond=0)
    except TimeError as exc:
        raise errors.bad_request("Bad Request", flavor="classic") from exc


def _query(call: ApiCall) -> ListQuery:
    p = call.params
    tz_name = p.get("timeZone")
    if tz_name is not None:
        try:
            zone(str(tz_name))
        except TimeError as exc:
            raise errors.invalid_value(
                f"Invalid time zone: {tz_name}", flavor="classic", location="timeZone"
            ) from exc
    return ListQuery(
        max_results=int(p.get("maxResults", DEFAULT_PAGE_SIZE)),
        page_token=p.get("pageToken"),
        sync_token=p.get("syncToken"),
        show_deleted=p.get("showDeleted"),
        single_events=bool(p.get("singleEvents", False)),
        time_min=_time_param(call, "timeMin"),
        time_max=_time_param(call, "timeMax"),
        updated_min=_time_param(call, "updatedMin"),
        order_by=p.get("orderBy"),
        q=p.get("q"),
        ical_uid=p.get("iCalUID"),
        private_properties=list(p.get("privateExtendedProperty", [])),
        shared_properties=list(p.get("sharedExtendedProperty", [])),
        event_types=list(p["eventTypes"]) if "eventTypes" in p else None,
        time_zone=tz_name,
        max_attendees=p.get("maxAttendees"),
        original_start=p.get("originalStart"),
        present=frozenset(p),
        short_page=FaultKind.SHORT_PAGE in call.faults,
    )


def _events_json(
    call: ApiCall, cal: StoredCalendar, result: ListResult
) -> dict[str, Any]:
    store = call.store.calendars
    out: dict[str, Any] = {
        "kind": "calendar#events",
        "etag": store.collection_etag(cal),
        "summary": cal.summary,
        **({"description": cal.description} if cal.description else {}),
        "updated": format_updated(cal.clock_ms or call.state.clock.now_ms()),
        "timeZone": result.tz_name,
        "accessRole": "owner" if cal.owner == call.principal.email else "reader",
        "defaultReminders": [{"method": "popup", "minutes": 30}] if cal.primary else [],
    }
    if result.next_page_token is not None:
        out["nextPageToken"] = result.next_page_token
    if result.next_sync_token is not None:
        out["nextSyncToken"] = result.next_sync_token
    out["items"] = result.items
    return out


def _display_zone(call: ApiCall, cal: StoredCalendar) -> Any:
    tz_name = call.params.get("timeZone")
    if tz_name is None:
        return cal.tz()
    try:
        return zone(str(tz_name))
    except TimeError as exc:
        raise errors.invalid_value(
            f"Invalid time zone: {tz_name}", flavor="classic", location="timeZone"
        ) from exc


def _calendar(call: ApiCall) -> StoredCalendar:
    return call.store.calendars.resolve(
        call.principal.email, call.path_params["calendarId"]
    )


def _body_object(call: ApiCall) -> dict[str, Any]:
    body = call.body
    if not isinstance(body, dict):
        raise errors.bad_request("Parse Error", flavor="classic", reason="parseError")
    return body


def calendar_service() -> ApiService:
    """Build the Calendar v3 service with all implemented handlers."""
    service = ApiService(
        bundled_document("calendar"),
        api_name="calendar",
        flavor="classic",
        esf_service="calendar-json.googleapis.com",
        base_path="calendar/v3/",
    )

    @service.route("calendar.calendarList.list")
    async def calendar_list(call: ApiCall) -> JsonResult:
        store = call.store.calendars
        with call.state.lock:
            entries = store.user_calendars(call.principal.email)
            since = None
            token = call.params.get("syncToken")
            if token is not None:
                since = _read_list_token(token)
            items = [
                store.render_list_entry(cal, call.principal.email)
                for cal in entries
                if since is None or cal.entry_seq > since
            ]
            size = min(int(call.params.get("maxResults", 100)), CALENDAR_LIST_MAX)
            raw_offset = str(call.params.get("pageToken") or "0")
            offset = int(raw_offset) if raw_offset.isdigit() else 0
            page = items[offset : offset + size]
            out: dict[str, Any] = {
                "kind": "calendar#calendarList",
                "etag": f'"p3{store.data.list_seq:014d}"',
            }
            if offset + size < len(items):
                out["nextPageToken"] = str(offset + size)
            else:
                out["nextSyncToken"] = _list_token(store.data.list_seq)
            out["items"] = page
            return out

    @service.route("calendar.calendarList.get")
    async def calendar_list_get(call: ApiCall) -> JsonResult:
        with call.state.lock:
            cal = _calendar(call)
            return call.store.calendars.render_list_entry(cal, call.principal.email)

    @service.route("calendar.calendars.get")
    async def calendars_get(call: ApiCall) -> JsonResult:
        with call.state.lock:
            cal = _calendar(call)
            out: dict[str, Any] = {
                "kind": "calendar#calendar",
                "etag": f'"{1_600_000_000_000 + cal.entry_seq * 1000}"',
                "id": cal.id,
                "summary": cal.summary,
                "timeZone": cal.time_zone,
                "conferenceProperties": {
                    "allowedConferenceSolutionTypes": ["hangoutsMeet"]
                },
            }
            if cal.description:
                out["description"] = cal.description
            return out

    @service.route("calendar.events.list")
    async def events_list(call: ApiCall) -> JsonResult:
        query = _query(call)
        with call.state.lock:
            cal = _calendar(call)
            result = call.store.listing.list_events(cal, query)
            return _events_json(call, cal, result)

    @service.route("calendar.events.instances")
    async def events_instances(call: ApiCall) -> JsonResult:
        query = _query(call)
        with call.state.lock:
            cal = _calendar(call)
            result = call.store.listing.list_instances(
                cal, call.path_params["eventId"], query
            )
            return _events_json(call, cal, result)

    @service.route("calendar.events.get")
    async def events_get(call: ApiCall) -> JsonResult:
        with call.state.lock:
            cal = _calendar(call)
            store = call.store.calendars
            view = store.view(cal, call.path_params["eventId"])
            etag = view.etag()
            if call.header("if-none-match") == etag:
                return Response(status_code=304, headers={"ETag": etag})
            return store.render(
                cal,
                view,
                tz=_display_zone(call, cal),
                max_attendees=call.params.get("maxAttendees"),
            )

    async def insert_or_import(call: ApiCall, mode: str) -> JsonResult:
        body = _body_object(call)
        with call.state.lock:
            cal = _calendar(call)
            store = call.store.calendars
            ev = store.insert(
                cal,
                body,
                now_ms=call.state.clock.now_ms(),
                mode="import" if mode == "import" else "insert",
            )
            return store.render(cal, store.view(cal, ev.id), tz=cal.tz())

    @service.route("calendar.events.insert")
    async def events_insert(call: ApiCall) -> JsonResult:
        return await insert_or_import(call, "insert")

    @service.route("calendar.events.import")
    async def events_import(call: ApiCall) -> JsonResult:
        return await insert_or_import(call, "import")

    async def write(call: ApiCall, *, patch: bool) -> JsonResult:
        body = _body_object(call)
        with call.state.lock:
            cal = _calendar(call)
            store = call.store.calendars
            view = store.write(
                cal,
                call.path_params["eventId"],
                body,
                patch=patch,
                if_match=call.header("if-match"),
                now_ms=call.state.clock.now_ms(),
            )
            return store.render(
                cal, view, tz=cal.tz(), max_attendees=call.params.get("maxAttendees")
            )

    @service.route("calendar.events.update")
    async def events_update(call: ApiCall) -> JsonResult:
        return await write(call, patch=False)

    @service.route("calendar.events.patch")
    async def events_patch(call: ApiCall) -> JsonResult:
        return await write(call, patch=True)

    @service.route("calendar.events.delete")
    async def events_delete(call: ApiCall) -> JsonResult:
        with call.state.lock:
            cal = _calendar(call)
            call.store.calendars.delete(
                cal,
                call.path_params["eventId"],
                if_match=call.header("if-match"),
                now_ms=call.state.clock.now_ms(),
            )
        return None

    @service.route("calendar.events.watch")
    async def events_watch(call: ApiCall) -> JsonResult:
        body = _body_object(call)
        query = _query(call)
        with call.state.lock:
            cal = _calendar(call)
            # events.watch takes the list parameters; invalid ones (e.g. an
            # expired syncToken) fail the watch like they fail a list.
            query.max_results = 1
            call.store.listing.list_events(cal, query)
            raw_id = call.path_params["calendarId"]
            resource_uri = f"{call.api_base}calendars/{raw_id}/events?alt=json"
            channel = call.store.push.create(
                body,
                client_id=call.principal.client_id,
                email=call.principal.email,
                calendar_id=cal.id,
                resource_uri=resource_uri,
                now_ms=call.state.clock.now_ms(),
            )
            # The sync message may arrive before the watch response (push guide).
            call.store.push.announce(channel)
            return channel.as_json()

    @service.route("calendar.channels.stop")
    async def channels_stop(call: ApiCall) -> JsonResult:
        body = _body_object(call)
        with call.state.lock:
            call.store.push.stop(
                body, client_id=call.principal.client_id, email=call.principal.email
            )
        return None

    return service


def _list_token(seq: int) -> str:
    return base64.b64encode(f"cl:{seq}".encode()).decode()


def _read_list_token(token: str) -> int:
    try:
        text = base64.b64decode(token.encode(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise errors.full_sync_required() from exc
    if not text.startswith("cl:") or not text[3:].isdigit():
        raise errors.full_sync_required()
    return int(text[3:])
