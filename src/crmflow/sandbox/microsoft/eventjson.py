"""Event JSON: validating request bodies and rendering Graph's event resource.

Request side (event-update.md, user-post-events.md; microsoft-graph.md §2.3):

* Unknown properties are 400 ``RequestBodyRead`` "The property 'x' does not
  exist on type 'microsoft.graph.event'…" (OData's wording).
* Read-only properties (``id``, ``changeKey``, ``type``…) are ignored.
* ``isAllDay: true`` needs midnight ``start``/``end`` in one zone (else 400).

Response side (checklist 3-4, 7):

* Every property is returned, ``null`` where unset, in Outlook's order;
  ``@odata.etag`` is ``W/"<changeKey>"``.
* ``start``/``end`` are UTC unless a zone is requested (``Prefer:
  outlook.timezone``); all-day events are always midnight-to-midnight.
* ``originalStart`` only on occurrences and exceptions; ``cancelledOccurrences``
  and ``singleValueExtendedProperties`` only when asked for.
* Bodies are HTML unless ``Prefer: outlook.body-content-type="text"``.
"""

from __future__ import annotations

import html
import re
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from crmflow.sandbox.microsoft.errors import (
    invalid_request,
    request_body_read,
)
from crmflow.sandbox.microsoft.timezones import format_local, format_utc

__all__ = [
    "EVENT_PROPERTIES",
    "NEVER",
    "ONE_DAY",
    "PASS_THROUGH",
    "check_properties",
    "default_props",
    "html_body",
    "is_midnight",
    "normalize_attendees",
    "normalize_body",
    "normalize_location",
    "normalize_pass_through",
    "preview",
    "render_body",
    "render_time",
    "text_of",
]

#: every event property in v1.0 (msgraph-sdk ``Event`` + ``OutlookItem`` + ``Entity``)
EVENT_PROPERTIES = frozenset(
    {
        "id", "@odata.type", "@odata.etag", "categories", "changeKey", "createdDateTime",
        "lastModifiedDateTime", "allowNewTimeProposals", "attendees", "body", "bodyPreview",
        "cancelledOccurrences", "end", "exceptionOccurrences", "hasAttachments",
        "hideAttendees", "iCalUId", "importance", "isAllDay", "isCancelled", "isDraft",
        "isOnlineMeeting", "isOrganizer", "isReminderOn", "location", "locations",
        "onlineMeeting", "onlineMeetingProvider", "onlineMeetingUrl", "organizer",
        "originalEndTimeZone", "originalStart", "originalStartTimeZone", "recurrence",
        "reminderMinutesBeforeStart", "responseRequested", "responseStatus", "sensitivity",
        "seriesMasterId", "showAs", "start", "subject", "transactionId", "type", "webLink",
        "attachments", "calendar", "extensions", "instances",
        "singleValueExtendedProperties", "multiValueExtendedProperties",
    }
)  # fmt: skip

#: writable properties stored as given (after normalisation)
PASS_THROUGH = (
    "subject",
    "body",
    "location",
    "locations",
    "attendees",
    "categories",
    "importance",
    "sensitivity",
    "showAs",
    "isReminderOn",
    "reminderMinutesBeforeStart",
    "responseRequested",
    "allowNewTimeProposals",
    "hideAttendees",
    "isOnlineMeeting",
    "onlineMeetingProvider",
)

_ENUMS: dict[str, tuple[str, ...]] = {
    "importance": ("low", "normal", "high"),
    "sensitivity": ("normal", "personal", "private", "confidential"),
    "showAs": ("free", "tentative", "busy", "oof", "workingElsewhere", "unknown"),
    "onlineMeetingProvider": (
        "unknown",
        "skypeForBusiness",
        "skypeForConsumer",
        "teamsForBusiness",
    ),
}
_BOOLS = (
    "isReminderOn",
    "responseRequested",
    "allowNewTimeProposals",
    "hideAttendees",
    "isOnlineMeeting",
    "isAllDay",
)
_ATTENDEE_TYPES = ("required", "optional", "resource")
#: unanswered ``status.time`` (microsoft-graph.md §2.3)
NEVER = "0001-01-01T00:00:00Z"
_TAG = re.compile(r"<[^>]+>")


def check_properties(
    body: dict[str, Any], known: frozenset[str], type_name: str
) -> None:
    """Raise 400 ``RequestBodyRead`` for a property the type does not have."""
    for name in body:
        if name.startswith("@odata.") or name in known:
            continue
        raise request_body_read(
            f"The property '{name}' does not exist on type '{type_name}'. Make sure to "
            "only use property names that are defined by the type or mark the type as open type."
        )


def _enum_value(name: str, value: object) -> str:
    allowed = _ENUMS[name]
    if isinstance(value, str):
        for item in allowed:
            if item.casefold() == value.casefold():
                return item
    raise request_body_read(
        f"Cannot convert the literal '{value}' to the expected type 'microsoft.graph.{name}'."
    )


def normalize_body(value: object) -> dict[str, str]:
    """``{"contentType": "text"|"html", "content": str}``; contentType case-insensitive."""
    if value is None:
        return {"contentType": "text", "content": ""}
    if not isinstance(value, dict):
        raise request_body_read("Property 'body' must be an itemBody object.")
    kind = str(value.get("contentType") or "text").casefold()
    if kind not in {"text", "html"}:
        raise request_body_read(
            f"Cannot convert the literal '{value.get('contentType')}' to the expected type 'microsoft.graph.bodyType'."
        )
    content = value.get("content") or ""
    if not isinstance(content, str):
        raise request_body_read("Property 'content' must be a string.")
    return {"contentType": kind, "content": content}


def normalize_location(value: object) -> dict[str, Any]:
    """Fill a location the way Outlook returns it."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise request_body_read("Property 'location' must be a location object.")
    name = str(value.get("displayName") or "")
    out: dict[str, Any] = {
        "displayName": name,
        "locationType": str(value.get("locationType") or "default"),
        "uniqueIdType": "private" if name else "unknown",
        "address": dict(value.get("address") or {}),
        "coordinates": dict(value.get("coordinates") or {}),
    }
    if name:
        out["uniqueId"] = str(value.get("uniqueId") or name)
    if value.get("locationUri"):
        out["locationUri"] = str(value["locationUri"])
    return out


def _email_address(value: object, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not isinstance(value.get("address"), str):
        raise invalid_request(
            f"Your request can't be completed. '{where}' needs an emailAddress with an address."
        )
    address = str(value["address"])
    return {"name": str(value.get("name") or address), "address": address}


def normalize_attendees(value: object) -> list[dict[str, Any]]:
    """``[{type, status {response, time}, emailAddress {name, address}}]`` (max 500)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise request_body_read("Property 'attendees' must be a collection.")
    if len(value) > 500:
        raise invalid_request(
            "Your request can't be completed. An event can have at most 500 attendees."
        )
    out = []
    for item in value:
        if not isinstance(item, dict):
            raise request_body_read("An attendee must be an object.")
        kind = str(item.get("type") or "required")
        if kind.casefold() not in _ATTENDEE_TYPES:
            raise request_body_read(
                f"Cannot convert the literal '{kind}' to the expected type 'microsoft.graph.attendeeType'."
            )
        out.append(
            {
                "type": kind.casefold(),
                "status": {"response": "none", "time": NEVER},
                "emailAddress": _email_address(item.get("emailAddress"), "attendees"),
            }
        )
    return out


def normalize_pass_through(name: str, value: object) -> Any:
    """Validate one pass-through property and return its stored form."""
    if name == "body":
        return normalize_body(value)
    if name == "location":
        return normalize_location(value)
    if name == "locations":
        if not isinstance(value, list):
            raise request_body_read("Property 'locations' must be a collection.")
        return [normalize_location(v) for v in value]
    if name == "attendees":
        return normalize_attendees(value)
    if name == "categories":
        if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
            raise request_body_read(
                "Property 'categories' must be a collection of strings."
            )
        return list(value)
    if name in _ENUMS:
        return _enum_value(name, value)
    if name in _BOOLS:
        if not isinstance(value, bool):
            raise request_body_read(
                f"Cannot convert the literal '{value}' to the expected type 'Edm.Boolean'."
            )
        return value
    if name == "reminderMinutesBeforeStart":
        if isinstance(value, bool) or not isinstance(value, int):
            raise request_body_read(
                f"Cannot convert the literal '{value}' to the expected type 'Edm.Int32'."
            )
        return value
    if name == "subject":
        if value is not None and not isinstance(value, str):
            raise request_body_read("Property 'subject' must be a string.")
        return value or ""
    return value


def default_props() -> dict[str, Any]:
    """Property defaults of a new event (as Outlook fills them)."""
    return {
        "subject": "",
        "body": {"contentType": "text", "content": ""},
        "location": normalize_location(None),
        "locations": [],
        "attendees": [],
        "categories": [],
        "importance": "normal",
        "sensitivity": "normal",
        "showAs": "busy",
        "isReminderOn": True,
        "reminderMinutesBeforeStart": 15,
        "responseRequested": True,
        "allowNewTimeProposals": True,
        "hideAttendees": False,
        "isOnlineMeeting": False,
        "onlineMeetingProvider": "unknown",
    }


def text_of(body: dict[str, str]) -> str:
    """Plain text of an itemBody (tags stripped, entities decoded, whitespace collapsed)."""
    content = body.get("content", "")
    if body.get("contentType") == "html":
        content = html.unescape(_TAG.sub(" ", content))
    return " ".join(content.split())


def html_body(body: dict[str, str]) -> dict[str, str]:
    """The HTML form Outlook returns for a body stored as text or HTML."""
    if body.get("contentType") == "html":
        return {"contentType": "html", "content": body.get("content", "")}
    escaped = html.escape(body.get("content", "")).replace("\n", "<br>\r\n")
    content = (
        '<html>\r\n<head>\r\n<meta http-equiv="Content-Type" content="text/html; charset=utf-8">\r\n'
        f"</head>\r\n<body>\r\n{escaped}\r\n</body>\r\n</html>\r\n"
    )
    return {"contentType": "html", "content": content}


def render_body(body: dict[str, str], prefer_text: bool) -> dict[str, str]:
    """The body as a response carries it (HTML unless text was preferred)."""
    if prefer_text:
        return {"contentType": "text", "content": text_of(body)}
    return html_body(body)


def render_time(
    instant: datetime,
    *,
    zone: ZoneInfo | None,
    zone_name: str,
    all_day_wall: datetime | None,
) -> dict[str, str]:
    """A response ``dateTimeTimeZone``.

    Timed values are converted into ``zone`` (UTC when None). All-day values
    keep their wall-clock midnight whatever the zone (jasonjoh on
    microsoft-graph-docs #1802).
    """
    if all_day_wall is not None:
        return {"dateTime": format_local(all_day_wall), "timeZone": zone_name}
    if zone is None:
        return {"dateTime": format_utc(instant)[:-1], "timeZone": "UTC"}
    return {"dateTime": format_local(instant.astimezone(zone)), "timeZone": zone_name}


def is_midnight(value: datetime) -> bool:
    """True for a wall clock exactly at midnight."""
    return (
        value.hour == 0
        and value.minute == 0
        and value.second == 0
        and value.microsecond == 0
    )


def preview(body: dict[str, str]) -> str:
    """``bodyPreview``: the first 255 characters of the text."""
    return text_of(body)[:255]


#: one day (all-day events end on the next midnight)
ONE_DAY = timedelta(days=1)
