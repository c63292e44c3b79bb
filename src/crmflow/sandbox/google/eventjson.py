"""Calendar JSON: events, instances and tombstones as Google renders them.

Field order and presence follow real payloads: ``kind``, ``etag``, ``id``,
``status``, ``htmlLink``, ``created``, ``updated``, content, ``creator``,
``organizer``, ``start``/``end`` (in the event's zone, else the calendar's or
the request's), ``iCalUID``, ``sequence``, ``reminders``, ``eventType``.
Tombstones in incremental results are minimal: "Deleted events are only
guaranteed to have the id field populated"; cancelled exceptions keep
``recurringEventId`` and ``originalStartTime``.

Rendered events are cached by record version (every write bumps it), so
repeated listings do not re-render; cached dicts must be treated as immutable.
"""

from __future__ import annotations

import base64
import copy
from typing import Any
from zoneinfo import ZoneInfo

from crmflow.sandbox.google.calendardata import (
    EventView,
    StoredCalendar,
    StoredEvent,
    instance_end,
)
from crmflow.sandbox.google.eventtime import (
    EventTime,
    format_updated,
    stored_event_time,
)
from crmflow.sandbox.google.recurrence import instance_suffix

__all__ = ["EventRenderer", "render_list_entry"]

#: rendered events kept for repeated listings (entries)
_RENDER_CACHE_MAX = 200_000


class EventRenderer:
    """Renders events with a version-keyed cache. Call with the state lock held."""

    def __init__(self) -> None:
        self._rendered: dict[tuple[Any, ...], dict[str, Any]] = {}

    def render(
        self,
        cal: StoredCalendar,
        view: EventView,
        *,
        tz: ZoneInfo,
        minimal: bool = False,
        max_attendees: int | None = None,
    ) -> dict[str, Any]:
        """Render an event, exception or instance as Google's ``Event`` JSON.

        ``minimal`` renders a tombstone the way incremental sync with
        showDeleted unset returns it: "Deleted events are only guaranteed to
        have the id field populated"; cancelled exceptions keep
        ``recurringEventId`` and ``originalStartTime``.
        """
        key = (
            cal.id,
            view.event.id,
            view.event.version_ms,
            view.exception.version_ms if view.exception else None,
            instance_suffix(view.original) if view.original else None,
            tz.key,
            minimal,
            max_attendees,
        )
        cached = self._rendered.get(key)
        if cached is not None:
            return cached
        if len(self._rendered) > _RENDER_CACHE_MAX:
            self._rendered.clear()
        out = self._render_uncached(
            cal, view, tz=tz, minimal=minimal, max_attendees=max_attendees
        )
        self._rendered[key] = out
        return out

    def _render_uncached(
        self,
        cal: StoredCalendar,
        view: EventView,
        *,
        tz: ZoneInfo,
        minimal: bool,
        max_attendees: int | None,
    ) -> dict[str, Any]:
        if view.original is not None and view.exception is None:
            return self._render_instance(
                cal,
                view.event,
                view.original,
                tz=tz,
                minimal=minimal,
                max_attendees=max_attendees,
            )
        ev = view.effective
        if minimal and ev.cancelled:
            out: dict[str, Any] = {
                "kind": "calendar#event",
                "etag": ev.etag(),
                "id": ev.id,
                "status": "cancelled",
            }
            if ev.recurring_event_id is not None and ev.original_start is not None:
                out["recurringEventId"] = ev.recurring_event_id
                out["originalStartTime"] = stored_event_time(ev.original_start).render(
                    tz
                )
            return out
        return self._render_full(cal, ev, tz=tz, max_attendees=max_attendees)

    def _render_full(
        self,
        cal: StoredCalendar,
        ev: StoredEvent,
        *,
        tz: ZoneInfo,
        max_attendees: int | None,
    ) -> dict[str, Any]:
        body = ev.body
        out: dict[str, Any] = {
            "kind": "calendar#event",
            "etag": ev.etag(),
            "id": ev.id,
            "status": ev.status,
            "htmlLink": _html_link(ev.id, cal.id),
            "created": format_updated(ev.created_ms),
            "updated": format_updated(ev.updated_ms),
        }
        for key in ("summary", "description", "location", "colorId"):
            if key in body:
                out[key] = body[key]
        out["creator"] = (
            {"email": cal.owner, "self": True}
            if ev.organizer.get("email") == cal.owner
            else {"email": ev.organizer.get("email", "")}
        )
        out["organizer"] = dict(ev.organizer)
        out["start"] = stored_event_time(body["start"]).render(tz)
        out["end"] = stored_event_time(body["end"]).render(tz)
        for key in ("endTimeUnspecified", "recurrence"):
            if key in body:
                out[key] = copy.deepcopy(body[key])
        if ev.recurring_event_id is not None and ev.original_start is not None:
            out["recurringEventId"] = ev.recurring_event_id
            out["originalStartTime"] = stored_event_time(ev.original_start).render(tz)
        for key in ("transparency", "visibility"):
            if key in body:
                out[key] = body[key]
        out["iCalUID"] = ev.ical_uid
        out["sequence"] = ev.sequence
        if "attendees" in body:
            attendees = copy.deepcopy(body["attendees"])
            if max_attendees is not None and len(attendees) > max_attendees:
                # "If there are more than the specified number of attendees,
                # only the participant is returned."
                attendees = [a for a in attendees if a.get("self")]
                out["attendeesOmitted"] = True
            out["attendees"] = attendees
        for key in (
            "anyoneCanAddSelf",
            "guestsCanInviteOthers",
            "guestsCanModify",
            "guestsCanSeeOtherGuests",
            "source",
            "attachments",
            "conferenceData",
            "gadget",
            "extendedProperties",
            "focusTimeProperties",
            "outOfOfficeProperties",
            "workingLocationProperties",
            "birthdayProperties",
            "eventLabelId",
        ):
            if key in body:
                out[key] = copy.deepcopy(body[key])
        out["reminders"] = copy.deepcopy(body.get("reminders", {"useDefault": True}))
        out["eventType"] = ev.event_type
        return out

    def _render_instance(
        self,
        cal: StoredCalendar,
        master: StoredEvent,
        original: EventTime,
        *,
        tz: ZoneInfo,
        minimal: bool,
        max_attendees: int | None,
    ) -> dict[str, Any]:
        instance_id = f"{master.id}_{instance_suffix(original)}"
        original_render = EventTime(
            original.day, original.instant, master.body["start"].get("timeZone")
        ).render(tz)
        if minimal and master.cancelled:
            return {
                "kind": "calendar#event",
                "etag": master.etag(),
                "id": instance_id,
                "status": "cancelled",
                "recurringEventId": master.id,
                "originalStartTime": original_render,
            }
        out = self._render_full(cal, master, tz=tz, max_attendees=max_attendees)
        start = EventTime(
            original.day, original.instant, master.body["start"].get("timeZone")
        )
        end = instance_end(master, original)
        rebuilt: dict[str, Any] = {}
        for key, value in out.items():
            if key == "recurrence":
                continue
            if key == "id":
                value = instance_id
            elif key == "start":
                value = start.render(tz)
            elif key == "end":
                value = end.render(tz)
            rebuilt[key] = value
            if key == "end":
                rebuilt["recurringEventId"] = master.id
                rebuilt["originalStartTime"] = original_render
        return rebuilt


def render_list_entry(cal: StoredCalendar, email: str) -> dict[str, Any]:
    """A ``CalendarListEntry`` of ``cal`` for its owner ``email``."""
    out: dict[str, Any] = {
        "kind": "calendar#calendarListEntry",
        "etag": f'"{1_600_000_000_000 + cal.entry_seq * 1000}"',
        "id": cal.id,
        "summary": cal.summary,
        "timeZone": cal.time_zone,
        "colorId": cal.color_id,
        "backgroundColor": cal.background_color,
        "foregroundColor": cal.foreground_color,
        "selected": True,
        "accessRole": "owner" if cal.owner == email else "reader",
        "defaultReminders": [{"method": "popup", "minutes": 30}] if cal.primary else [],
        "conferenceProperties": {"allowedConferenceSolutionTypes": ["hangoutsMeet"]},
    }
    if cal.description:
        out["description"] = cal.description
    if cal.primary:
        out["notificationSettings"] = {
            "notifications": [
                {"type": "eventCreation", "method": "email"},
                {"type": "eventChange", "method": "email"},
                {"type": "eventCancellation", "method": "email"},
                {"type": "eventResponse", "method": "email"},
            ]
        }
        out["primary"] = True
    return out


def _html_link(event_id: str, calendar_id: str) -> str:
    eid = (
        base64.urlsafe_b64encode(f"{event_id} {calendar_id}".encode())
        .decode()
        .rstrip("=")
    )
    return f"https://www.google.com/calendar/event?eid={eid}"
