"""Calendar v3 writes and lookups: calendars, events, exceptions, sync tokens.

HTTP lives in :mod:`crmflow.sandbox.google.calendar`; this module holds the
behaviour, each rule from Google's documentation as collected in
google-apis.md §2-§3 and its checklist (items 1-16):

* Every write gives the event a new ``updated`` (ms precision) and a new etag
  ``"<2 × updated in µs>"`` ([OBS] in real payloads), except that
  "Updating event reminders will not cause [updated] to change" — the etag still
  changes (checklist 9, 11).
* Sync: each write takes the calendar's next change number. A sync token names
  a change number and the calendar's *epoch*; :meth:`Calendars.expire_sync_tokens`
  bumps the epoch, so older tokens get 410 ``fullSyncRequired``. Incremental
  results contain every changed event, tombstones included.
* Ids: client-chosen ids must match ``^[a-v0-9]{5,1024}$`` (base32hex); a
  duplicate — even of a deleted event — is 409 ``duplicate``.
* Deletes leave tombstones (``status: cancelled``); deleting again is 410
  ``deleted``; ``get`` still returns them.
* Recurring series are expanded by :mod:`crmflow.sandbox.google.recurrence`;
  modified or cancelled instances are stored as *exceptions* with
  ``recurringEventId`` and ``originalStartTime``, keyed by the instance id.

Listing lives in :mod:`~crmflow.sandbox.google.listing`, rendering in
:mod:`~crmflow.sandbox.google.eventjson`, field rules in
:mod:`~crmflow.sandbox.google.eventfields`. All methods must be called with the
sandbox state lock held.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Iterable
from typing import Any, Literal
from zoneinfo import ZoneInfo

from crmflow.sandbox.google import errors
from crmflow.sandbox.google.calendardata import (
    BASE32HEX,
    EVENT_ID,
    CalendarsData,
    EventView,
    StoredCalendar,
    StoredEvent,
    b64_token,
    instance_end,
    new_event_id,
    read_b64_token,
)
from crmflow.sandbox.google.eventfields import (
    CREATABLE_TYPES,
    STATUSES,
    check_shared_owner,
    classic_bad,
    prepare_body,
)
from crmflow.sandbox.google.eventjson import EventRenderer, render_list_entry
from crmflow.sandbox.google.eventtime import EventTime, ms_of, stored_event_time, zone
from crmflow.sandbox.google.recurrence import (
    Series,
    build_series,
    instance_suffix,
    split_instance_id,
)

__all__ = ["Calendars"]


class Calendars:
    """Calendar rules over :class:`CalendarsData`. Call with the state lock held."""

    def __init__(self, data: CalendarsData | None = None) -> None:
        self.data = data or CalendarsData()
        #: called with a calendar after every change to its events (push)
        self.listeners: list[Callable[[StoredCalendar], None]] = []
        self.renderer = EventRenderer()

    # -- calendars -----------------------------------------------------------------

    def ensure_primary(self, email: str, *, time_zone: str = "UTC") -> StoredCalendar:
        """Return the user's primary calendar (id = email), creating it."""
        cal = self.data.calendars.get(email)
        if cal is None:
            self.data.list_seq += 1
            cal = StoredCalendar(
                id=email,
                owner=email,
                summary=email,
                time_zone=time_zone,
                primary=True,
                entry_seq=self.data.list_seq,
            )
            self.data.calendars[email] = cal
            self.data.lists.setdefault(email, []).insert(0, email)
        return cal

    def add_calendar(
        self, owner: str, *, summary: str, time_zone: str
    ) -> StoredCalendar:
        """Create a secondary calendar owned by ``owner``."""
        zone(time_zone)
        self.data.list_seq += 1
        cal_id = new_event_id() + "@group.calendar.google.com"
        cal = StoredCalendar(
            id=cal_id,
            owner=owner,
            summary=summary,
            time_zone=time_zone,
            primary=False,
            entry_seq=self.data.list_seq,
        )
        self.data.calendars[cal_id] = cal
        self.data.lists.setdefault(owner, []).append(cal_id)
        return cal

    def resolve(self, email: str, calendar_id: str) -> StoredCalendar:
        """Return the calendar ``calendar_id`` (or ``primary``) as seen by ``email``.

        Raises:
            GoogleApiError: 404 notFound when the user has no such calendar.
        """
        if calendar_id == "primary":
            return self.ensure_primary(email)
        cal = self.data.calendars.get(calendar_id)
        if cal is None or calendar_id not in self.data.lists.get(email, []):
            if calendar_id == email:
                return self.ensure_primary(email)
            raise errors.not_found(flavor="classic")
        return cal

    def user_calendars(self, email: str) -> list[StoredCalendar]:
        """The user's calendar list, primary first."""
        self.ensure_primary(email)
        return [self.data.calendars[c] for c in self.data.lists.get(email, [])]

    def expire_sync_tokens(self, cal: StoredCalendar, now_ms: int) -> None:
        """Invalidate every sync token (and updatedMin value) issued so far for ``cal``."""
        cal.epoch += 1
        cal.updated_min_floor_ms = now_ms

    # -- tokens ------------------------------------------------------------------------

    def sync_token(self, cal: StoredCalendar, seq: int) -> str:
        """An opaque token for "changes after ``seq``" in the current epoch."""
        return b64_token(
            {
                "c": hashlib.sha256(cal.id.encode()).hexdigest()[:12],
                "s": seq,
                "e": cal.epoch,
            }
        )

    def read_sync_token(self, cal: StoredCalendar, token: str) -> int:
        data = read_b64_token(token)
        if (
            data is None
            or data.get("c") != hashlib.sha256(cal.id.encode()).hexdigest()[:12]
            or data.get("e") != cal.epoch
            or not isinstance(data.get("s"), int)
        ):
            # Invalidated, foreign or garbled: Google answers every one of these
            # with 410 and a full sync (sync guide).
            raise errors.full_sync_required()
        return int(data["s"])

    def collection_etag(self, cal: StoredCalendar) -> str:
        """The Events collection etag (``"p3…"``-style, [OBS])."""
        digest = hashlib.sha256(f"{cal.id}:{cal.seq}:{cal.epoch}".encode()).digest()
        chars = "".join(BASE32HEX[b % 32] for b in digest[:14])
        return f'"p3{chars}"'

    # -- writes -------------------------------------------------------------------------

    def _stamp(self, cal: StoredCalendar, now_ms: int) -> int:
        cal.clock_ms = max(now_ms, cal.clock_ms + 1)
        return cal.clock_ms

    def _changed(self, cal: StoredCalendar, events: Iterable[StoredEvent]) -> None:
        for ev in events:
            cal.seq += 1
            ev.change_seq = cal.seq
        for listener in list(self.listeners):
            listener(cal)

    def insert(
        self,
        cal: StoredCalendar,
        raw: dict[str, Any],
        *,
        now_ms: int,
        mode: Literal["insert", "import"] = "insert",
    ) -> StoredEvent:
        """events.insert / events.import.

        Raises:
            GoogleApiError: 400 "Invalid resource id value." (id not base32hex
                5-1024), 409 duplicate (id or iCalUID taken, tombstones
                included), 400 for invalid content (see :meth:`_prepare`).
        """
        event_id = raw.get("id")
        ical_uid = raw.get("iCalUID")
        if mode == "import":
            if not ical_uid:
                raise errors.bad_request(
                    "Missing iCalUID.", flavor="classic", reason="required"
                )
            existing = next(
                (
                    e
                    for e in cal.events.values()
                    if e.ical_uid == ical_uid and e.recurring_event_id is None
                ),
                None,
            )
            if existing is not None:
                # Import is idempotent per iCalUID: a re-import updates the copy.
                return self._replace(
                    cal, existing, raw, patch=False, now_ms=now_ms, mode="import"
                )
        if event_id is not None:
            if not isinstance(event_id, str) or not EVENT_ID.match(event_id):
                raise errors.invalid_value(
                    "Invalid resource id value.", flavor="classic"
                )
            if event_id in cal.events:
                raise errors.duplicate()
        else:
            event_id = new_event_id()
        if (
            mode == "insert"
            and ical_uid is not None
            and any(e.ical_uid == ical_uid for e in cal.events.values())
        ):
            raise errors.duplicate()
        event_type = raw.get("eventType") or "default"
        if event_type not in CREATABLE_TYPES or (
            mode == "import" and event_type != "default"
        ):
            raise classic_bad(f"Event type cannot be created: {event_type}.")
        status = raw.get("status") or "confirmed"
        if status not in STATUSES:
            raise classic_bad("Invalid value for: status")
        body, start, end = prepare_body(
            cal, raw, base=None, patch=False, event_type=event_type
        )
        organizer = {"email": cal.owner, "self": True}
        if (
            mode == "import"
            and isinstance(raw.get("organizer"), dict)
            and raw["organizer"].get("email")
        ):
            organizer = {"email": str(raw["organizer"]["email"]).lower()}
            if raw["organizer"].get("displayName"):
                organizer["displayName"] = str(raw["organizer"]["displayName"])
            if organizer["email"] == cal.owner:
                organizer["self"] = True
        # Creating (or importing the organizer's copy) sets shared properties
        # legitimately; only later changes by non-organizers are refused.
        stamp = self._stamp(cal, now_ms)
        given_sequence = raw.get("sequence")
        sequence = given_sequence if isinstance(given_sequence, int) else 0
        ev = StoredEvent(
            id=event_id,
            body=body,
            status=status,
            ical_uid=ical_uid or f"{event_id}@google.com",
            created_ms=stamp,
            updated_ms=stamp,
            version_ms=stamp,
            change_seq=0,
            sequence=sequence,
            event_type=event_type,
            organizer=organizer,
            start_ms=ms_of(start.start_in(cal.tz())),
            end_ms=ms_of(end.start_in(cal.tz())),
        )
        cal.events[event_id] = ev
        self._changed(cal, [ev])
        return ev

    def write(
        self,
        cal: StoredCalendar,
        event_id: str,
        raw: dict[str, Any],
        *,
        patch: bool,
        if_match: str | None,
        now_ms: int,
    ) -> EventView:
        """events.update (``patch=False``) / events.patch, on events or instances.

        Raises:
            GoogleApiError: 404 unknown id, 412 conditionNotMet when ``if_match``
                differs from the current etag, 403 forbidden when updating a
                deleted event without restoring it, 400 invalid content.
        """
        view = self.view(cal, event_id)
        if if_match is not None and if_match != "*" and if_match != view.etag():
            raise errors.condition_not_met()
        if view.original is not None and view.exception is None:
            exception = self._materialize(cal, view, now_ms)
            updated = self._replace(
                cal,
                exception,
                raw,
                patch=patch,
                now_ms=now_ms,
                mode="insert",
                fresh=True,
            )
            return EventView(view.event, view.original, updated)
        target = view.effective
        updated = self._replace(
            cal, target, raw, patch=patch, now_ms=now_ms, mode="insert"
        )
        if view.original is not None:
            return EventView(view.event, view.original, updated)
        return EventView(updated)

    def delete(
        self, cal: StoredCalendar, event_id: str, *, if_match: str | None, now_ms: int
    ) -> None:
        """events.delete: leave a tombstone.

        Raises:
            GoogleApiError: 404 unknown id, 410 deleted when already deleted,
                412 conditionNotMet on an If-Match mismatch.
        """
        view = self.view(cal, event_id)
        if if_match is not None and if_match != "*" and if_match != view.etag():
            raise errors.condition_not_met()
        if view.effective.cancelled or (
            view.original is not None and view.event.cancelled
        ):
            raise errors.deleted()
        if view.original is not None and view.exception is None:
            exception = self._materialize(cal, view, now_ms)
            exception.status = "cancelled"
            self._changed(cal, [exception])
            return
        ev = view.effective
        stamp = self._stamp(cal, now_ms)
        ev.status = "cancelled"
        ev.updated_ms = ev.version_ms = stamp
        changed = [ev]
        if ev.is_series:
            # Deleting a series cancels its exceptions too.
            for other in cal.events.values():
                if other.recurring_event_id == ev.id and not other.cancelled:
                    other.status = "cancelled"
                    other.updated_ms = other.version_ms = stamp
                    changed.append(other)
        self._changed(cal, changed)

    def _materialize(
        self, cal: StoredCalendar, view: EventView, now_ms: int
    ) -> StoredEvent:
        """Store a generated instance as an exception (before modifying it)."""
        master = view.event
        assert view.original is not None  # noqa: S101 - only called for instances
        body = copy.deepcopy(master.body)
        body.pop("recurrence", None)
        start = view.original
        end = instance_end(master, start)
        body["start"] = start.stored()
        body["end"] = end.stored()
        stamp = self._stamp(cal, now_ms)
        instance_id = f"{master.id}_{instance_suffix(view.original)}"
        ev = StoredEvent(
            id=instance_id,
            body=body,
            status=master.status,
            ical_uid=master.ical_uid,
            created_ms=master.created_ms,
            updated_ms=stamp,
            version_ms=stamp,
            change_seq=0,
            sequence=master.sequence,
            event_type=master.event_type,
            organizer=dict(master.organizer),
            start_ms=ms_of(start.start_in(cal.tz())),
            end_ms=ms_of(end.start_in(cal.tz())),
            recurring_event_id=master.id,
            original_start=self._original_stored(master, view.original),
        )
        cal.events[instance_id] = ev
        return ev

    def _original_stored(
        self, master: StoredEvent, original: EventTime
    ) -> dict[str, str]:
        tz_name = master.body["start"].get("timeZone")
        return EventTime(original.day, original.instant, tz_name).stored()

    def _replace(
        self,
        cal: StoredCalendar,
        ev: StoredEvent,
        raw: dict[str, Any],
        *,
        patch: bool,
        now_ms: int,
        mode: Literal["insert", "import"],
        fresh: bool = False,
    ) -> StoredEvent:
        status = raw.get("status")
        if status is not None and status not in STATUSES:
            raise classic_bad("Invalid value for: status")
        if ev.cancelled and not fresh and status in (None, "cancelled"):
            # Deleted events stay deleted unless the update restores them
            # (google-api-python-client #846, ruby #1811: update -> 403).
            raise errors.error(403, "forbidden", "Forbidden", flavor="classic")
        if ev.recurring_event_id is not None and raw.get("recurrence"):
            raise classic_bad("Invalid recurrence rule.")
        seq_given = raw.get("sequence")
        if isinstance(seq_given, int) and seq_given < ev.sequence:
            raise classic_bad(
                "Invalid sequence value. The specified sequence number is below "
                "the current sequence number of the resource."
            )
        body, start, end = prepare_body(
            cal, raw, base=ev.body, patch=patch, event_type=ev.event_type
        )
        check_shared_owner(cal, ev.organizer, ev.body, body)
        stamp = self._stamp(cal, now_ms)
        old = ev.body
        only_reminders = {k: v for k, v in old.items() if k != "reminders"} == {
            k: v for k, v in body.items() if k != "reminders"
        } and (status is None or status == ev.status)
        if not only_reminders or fresh:
            ev.updated_ms = stamp
        ev.version_ms = stamp
        significant = any(
            old.get(k) != body.get(k) for k in ("start", "end", "recurrence")
        )
        # When Google bumps `sequence` is unverified; iCalendar bumps it on
        # significant changes (time, recurrence), so the sandbox does too.
        ev.sequence = max(
            seq_given if isinstance(seq_given, int) else 0,
            ev.sequence + (1 if significant else 0),
        )
        ev.body = body
        if status is not None:
            ev.status = status
        if (
            mode == "import"
            and isinstance(raw.get("organizer"), dict)
            and raw["organizer"].get("email")
        ):
            ev.organizer = {"email": str(raw["organizer"]["email"]).lower()}
        ev.start_ms = ms_of(start.start_in(cal.tz()))
        ev.end_ms = ms_of(end.start_in(cal.tz()))
        self._changed(cal, [ev])
        return ev

    # -- reads -----------------------------------------------------------------------------

    def series(self, cal: StoredCalendar, master: StoredEvent) -> Series:
        """The expandable series of a recurring master."""
        return build_series(
            list(master.body["recurrence"]), master.start(), master.end(), cal.tz()
        )

    def view(self, cal: StoredCalendar, event_id: str) -> EventView:
        """Resolve an event id, instance ids included.

        Raises:
            GoogleApiError: 404 notFound.
        """
        ev = cal.events.get(event_id)
        if ev is not None:
            if ev.recurring_event_id is not None and ev.original_start is not None:
                master = cal.events.get(ev.recurring_event_id)
                if master is not None:
                    return EventView(master, stored_event_time(ev.original_start), ev)
            return EventView(ev)
        split = split_instance_id(event_id)
        if split is not None:
            master_id, original = split
            master = cal.events.get(master_id)
            if master is not None and master.is_series:
                series = self.series(cal, master)
                if original.all_day == series.all_day and series.contains(original):
                    full = EventTime(
                        original.day,
                        original.instant,
                        master.body["start"].get("timeZone"),
                    )
                    return EventView(master, full, None)
        raise errors.not_found(flavor="classic")

    def render(
        self,
        cal: StoredCalendar,
        view: EventView,
        *,
        tz: ZoneInfo,
        minimal: bool = False,
        max_attendees: int | None = None,
    ) -> dict[str, Any]:
        """Render ``view`` as Google's Event JSON (see :mod:`~crmflow.sandbox.google.eventjson`)."""
        return self.renderer.render(
            cal, view, tz=tz, minimal=minimal, max_attendees=max_attendees
        )

    def render_list_entry(self, cal: StoredCalendar, email: str) -> dict[str, Any]:
        """A ``CalendarListEntry`` of ``cal`` for ``email``."""
        return render_list_entry(cal, email)
