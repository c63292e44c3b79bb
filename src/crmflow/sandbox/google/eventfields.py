"""Event field rules: what a client may write and how Google validates it.

* Writable fields (:data:`WRITABLE`); read-only ones in a body are ignored.
* Patch semantics merge top-level fields and, recursively, the keys of nested
  objects (``start``/``end``, ``reminders``, ...); ``null`` clears a field or a
  key; arrays are replaced; ``extendedProperties`` merge per key with ``null``
  deleting a key; update replaces everything (extended-properties guide).
* ``start``/``end`` per :mod:`~crmflow.sandbox.google.eventtime`; recurring timed
  events need ``start.timeZone``; recurrence lines must expand.
* Extended properties: keys over 44 characters dropped, values cut at 1024,
  at most 300 properties / 32 kB; no private properties on birthday events;
  shared properties only by the organizer (403 ``forbiddenForNonOrganizer``).
* Reminders: at most 5 overrides of 0-40320 minutes, not together with
  ``useDefault``. Attendees need an email.
"""

from __future__ import annotations

import copy
from typing import Any

from crmflow.sandbox.google import errors
from crmflow.sandbox.google.calendardata import StoredCalendar
from crmflow.sandbox.google.errors import GoogleApiError
from crmflow.sandbox.google.eventtime import EventTime, TimeError, parse_event_time
from crmflow.sandbox.google.recurrence import RecurrenceError, build_series

__all__ = [
    "CREATABLE_TYPES",
    "STATUSES",
    "WRITABLE",
    "check_shared_owner",
    "classic_bad",
    "prepare_body",
]

#: extended properties limits (extended-properties guide)
EXT_KEY_MAX = 44
EXT_VALUE_MAX = 1024
EXT_MAX_PROPERTIES = 300
EXT_MAX_BYTES = 32 * 1024

#: reminders: at most 5 overrides, 0-40320 minutes (4 weeks)
MAX_REMINDER_OVERRIDES = 5
MAX_REMINDER_MINUTES = 40320

#: Event fields a client may write (everything else in a body is read-only
#: and ignored: kind, etag, htmlLink, created, updated, creator, ...)
WRITABLE = frozenset(
    {
        "anyoneCanAddSelf",
        "attachments",
        "attendees",
        "birthdayProperties",
        "colorId",
        "conferenceData",
        "description",
        "end",
        "endTimeUnspecified",
        "eventLabelId",
        "extendedProperties",
        "focusTimeProperties",
        "gadget",
        "guestsCanInviteOthers",
        "guestsCanModify",
        "guestsCanSeeOtherGuests",
        "location",
        "outOfOfficeProperties",
        "recurrence",
        "reminders",
        "source",
        "start",
        "summary",
        "transparency",
        "visibility",
        "workingLocationProperties",
    }
)
CREATABLE_TYPES = frozenset(
    {"default", "birthday", "focusTime", "outOfOffice", "workingLocation"}
)
STATUSES = frozenset({"confirmed", "tentative", "cancelled"})


def classic_bad(message: str, reason: str = "invalid") -> GoogleApiError:
    """400 in the Calendar (classic) envelope; reason ``invalid`` unless told."""
    return errors.bad_request(message, flavor="classic", reason=reason)


def prepare_body(
    cal: StoredCalendar,
    raw: dict[str, Any],
    *,
    base: dict[str, Any] | None,
    patch: bool,
    event_type: str,
) -> tuple[dict[str, Any], EventTime, EventTime]:
    """Merge/replace the writable fields and validate the result."""
    if patch and base is not None:
        body = copy.deepcopy(base)
        for key, value in raw.items():
            if key not in WRITABLE:
                continue
            if key == "extendedProperties":
                merged = _merge_extended(body.get(key), value)
                if merged:
                    body[key] = merged
                else:
                    body.pop(key, None)
            elif value is None:
                # JSON null clears a field in patch semantics.
                body.pop(key, None)
            else:
                body[key] = _merge_patch(body.get(key), value)
    else:
        body = {
            k: copy.deepcopy(v)
            for k, v in raw.items()
            if k in WRITABLE and v is not None
        }
    if "start" not in body:
        raise errors.bad_request(
            "Missing start time.", flavor="classic", reason="required"
        )
    if "end" not in body:
        raise errors.bad_request(
            "Missing end time.", flavor="classic", reason="required"
        )
    try:
        start = parse_event_time(body["start"], "start")
        end = parse_event_time(body["end"], "end")
    except TimeError as exc:
        raise classic_bad(str(exc)) from exc
    if start.all_day != end.all_day:
        raise classic_bad("Invalid start time.")
    tz = cal.tz()
    if end.start_in(tz) < start.start_in(tz):
        raise errors.time_range_empty(location="end")
    recurrence = body.get("recurrence")
    if recurrence is not None:
        if not isinstance(recurrence, list) or not all(
            isinstance(r, str) for r in recurrence
        ):
            raise classic_bad("Invalid recurrence rule.")
        if not recurrence:
            body.pop("recurrence")
        else:
            if not start.all_day and not start.tz_name:
                # "start.timeZone ... is required for recurring events"
                raise classic_bad("Missing time zone definition for start time.")
            try:
                build_series(recurrence, start, end, tz)
            except RecurrenceError as exc:
                raise classic_bad("Invalid recurrence rule.") from exc
    body["start"] = start.stored()
    body["end"] = end.stored()
    if "attendees" in body:
        body["attendees"] = _normalize_attendees(body["attendees"], cal.owner)
    if "reminders" in body:
        _check_reminders(body["reminders"])
    if "extendedProperties" in body:
        ext = _limit_extended(body["extendedProperties"])
        if ext:
            body["extendedProperties"] = ext
        else:
            body.pop("extendedProperties")
        if event_type == "birthday" and ext.get("private"):
            raise classic_bad(
                "'birthday' event type must not have private extended properties."
            )
    for key in ("summary", "description", "location"):
        if key in body and not isinstance(body[key], str):
            raise classic_bad(f"Invalid value for: {key}")
    return body, start, end


def check_shared_owner(
    cal: StoredCalendar,
    organizer: dict[str, Any],
    old: dict[str, Any],
    new: dict[str, Any],
) -> None:
    old_shared = (old.get("extendedProperties") or {}).get("shared") or {}
    new_shared = (new.get("extendedProperties") or {}).get("shared") or {}
    if organizer.get("email") != cal.owner and old_shared != new_shared:
        raise errors.error(
            403,
            "forbiddenForNonOrganizer",
            "Shared properties can only be changed by the organizer of the event.",
            flavor="classic",
            domain="calendar",
        )


def _normalize_attendees(raw: Any, owner: str) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise classic_bad("Invalid attendee list.")
    out: list[dict[str, Any]] = []
    for attendee in raw:
        if not isinstance(attendee, dict) or not attendee.get("email"):
            raise classic_bad("Missing attendee email.", reason="required")
        item = dict(attendee)
        item["email"] = str(item["email"]).lower()
        item.setdefault("responseStatus", "needsAction")
        if item["responseStatus"] not in (
            "needsAction",
            "declined",
            "tentative",
            "accepted",
        ):
            raise classic_bad("Invalid attendee responseStatus.")
        if item["email"] == owner:
            item["self"] = True
            item.setdefault("organizer", True)
        out.append(item)
    return out


def _check_reminders(raw: Any) -> None:
    if not isinstance(raw, dict):
        raise classic_bad("Invalid reminders.")
    overrides = raw.get("overrides") or []
    if raw.get("useDefault") and overrides:
        raise classic_bad(
            "Cannot specify both default reminders and overrides at the same time."
        )
    if len(overrides) > MAX_REMINDER_OVERRIDES:
        raise classic_bad("The maximum number of override reminders is 5.")
    for item in overrides:
        if not isinstance(item, dict) or item.get("method") not in ("email", "popup"):
            raise classic_bad("Invalid reminder method.")
        minutes = item.get("minutes")
        if not isinstance(minutes, int) or not 0 <= minutes <= MAX_REMINDER_MINUTES:
            raise classic_bad("Invalid reminder minutes.")


def _merge_patch(old: Any, new: Any) -> Any:
    """Patch semantics for one field: objects are merged key by key (a ``null``
    member clears that key), anything else, arrays included, is replaced.

    Google documents this for its APIs' patch and its Calendar team confirmed it
    for ``start``/``end``: patching an all-day event with only ``dateTime``
    leaves ``date`` in place and the write is refused, so a client turning an
    all-day event into a timed one sends ``"date": null``.
    """
    if not isinstance(new, dict) or not isinstance(old, dict):
        return copy.deepcopy(new)
    merged = copy.deepcopy(old)
    for key, value in new.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = _merge_patch(merged.get(key), value)
    return merged


def _merge_extended(old: Any, patch: Any) -> dict[str, dict[str, str]]:
    """PATCH semantics: set keys, ``null`` deletes a key (extended-properties guide)."""
    merged: dict[str, dict[str, str]] = (
        copy.deepcopy(old) if isinstance(old, dict) else {}
    )
    if patch is None:
        return {}
    if not isinstance(patch, dict):
        raise classic_bad("Invalid extendedProperties.")
    for scope in ("private", "shared"):
        if scope not in patch:
            continue
        values = patch[scope]
        if values is None:
            merged.pop(scope, None)
            continue
        if not isinstance(values, dict):
            raise classic_bad("Invalid extendedProperties.")
        target = merged.setdefault(scope, {})
        for key, value in values.items():
            if value is None:
                target.pop(key, None)
            else:
                target[key] = value
        if not target:
            merged.pop(scope)
    return merged


def _limit_extended(raw: Any) -> dict[str, dict[str, str]]:
    """Apply Google's limits: keys > 44 chars dropped, values cut at 1024, 300 / 32 kB."""
    if not isinstance(raw, dict):
        raise classic_bad("Invalid extendedProperties.")
    out: dict[str, dict[str, str]] = {}
    count = 0
    size = 0
    for scope in ("private", "shared"):
        values = raw.get(scope)
        if values is None:
            continue
        if not isinstance(values, dict):
            raise classic_bad("Invalid extendedProperties.")
        kept: dict[str, str] = {}
        for key, value in values.items():
            if value is None or len(key) > EXT_KEY_MAX:
                continue  # "longer keys are silently dropped"
            text = str(value)[:EXT_VALUE_MAX]  # "longer values silently truncated"
            kept[key] = text
            count += 1
            size += len(key.encode()) + len(text.encode())
        if kept:
            out[scope] = kept
    if count > EXT_MAX_PROPERTIES or size > EXT_MAX_BYTES:
        raise classic_bad(
            "The extended properties of the event exceed the allowed size."
        )
    return out
