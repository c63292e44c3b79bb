"""HTML form input: parsing, validation with messages for people, re-display.

A form object keeps the raw strings the user typed, so a form with an error is
shown again exactly as it was sent (only passwords are never echoed). Validation
collects one message per field, saying what is wrong and what to do, and builds
the domain draft only when every field is valid; the caller writes nothing
otherwise.

Appointment times: the browser's ``datetime-local`` inputs send wall-clock times
without an offset (``2026-05-01T09:30``); they are read in the form's IANA time
zone, and a time that does not exist there (the hour skipped when clocks go
forward) is rejected instead of silently shifted. All-day appointments are
entered with an *inclusive* last day, which people expect, and stored with the
exclusive end date of RFC 5545 (``DTEND;VALUE=DATE`` is the day after).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from crmflow.domain import crm
from crmflow.domain.appointments import (
    AppointmentStatus,
    TimeSpan,
    all_day_span,
    timed_span,
    zone,
)
from crmflow.errors import ValidationFailed

#: offered in the time zone picker; the browser's own zone and the zone of the
#: appointment being edited are added when missing (any IANA name is accepted)
COMMON_TIMEZONES: tuple[str, ...] = (
    "UTC",
    "Europe/London",
    "Europe/Dublin",
    "Europe/Lisbon",
    "Europe/Paris",
    "Europe/Berlin",
    "Europe/Madrid",
    "Europe/Rome",
    "Europe/Amsterdam",
    "Europe/Zurich",
    "Europe/Vienna",
    "Europe/Stockholm",
    "Europe/Warsaw",
    "Europe/Athens",
    "Europe/Helsinki",
    "Europe/Istanbul",
    "Europe/Kyiv",
    "Europe/Moscow",
    "Africa/Cairo",
    "Africa/Johannesburg",
    "Africa/Lagos",
    "Africa/Nairobi",
    "Asia/Dubai",
    "Asia/Karachi",
    "Asia/Kolkata",
    "Asia/Dhaka",
    "Asia/Bangkok",
    "Asia/Jakarta",
    "Asia/Singapore",
    "Asia/Shanghai",
    "Asia/Hong_Kong",
    "Asia/Tokyo",
    "Asia/Seoul",
    "Australia/Perth",
    "Australia/Sydney",
    "Pacific/Auckland",
    "Pacific/Honolulu",
    "America/Anchorage",
    "America/Los_Angeles",
    "America/Denver",
    "America/Phoenix",
    "America/Chicago",
    "America/Mexico_City",
    "America/New_York",
    "America/Toronto",
    "America/Bogota",
    "America/Lima",
    "America/Santiago",
    "America/Sao_Paulo",
    "America/Argentina/Buenos_Aires",
)

STATUS_LABELS: Mapping[str, str] = {
    AppointmentStatus.CONFIRMED.value: "Confirmed",
    AppointmentStatus.TENTATIVE.value: "Tentative",
    AppointmentStatus.CANCELLED.value: "Cancelled",
}

#: the longest values the database columns (and the JSON API) accept
TITLE_MAX = 500
LOCATION_MAX = 500
DESCRIPTION_MAX = 20_000
TOKEN_NAME_MAX = 100

#: accepted years: far enough for any appointment, and clear of the ends of
#: ``datetime`` (year 1 / 9999), where converting between zones overflows
YEARS = range(1900, 3000)

#: error key of messages about the whole form rather than one field
FORM = "__form__"


def text(form: Mapping[str, Any], name: str) -> str:
    """A text field of a submitted form ("" when absent or a file)."""
    value = form.get(name)
    return value if isinstance(value, str) else ""


def timezone_choices(*extra: str) -> list[str]:
    """:data:`COMMON_TIMEZONES` plus ``extra`` zones that are valid and missing."""
    choices = list(COMMON_TIMEZONES)
    for name in extra:
        if name and name not in choices:
            try:
                zone(name)
            except ValidationFailed:
                continue
            choices.append(name)
    return choices


def _local_value(value: dt.datetime) -> str:
    return f"{value:%Y-%m-%dT%H:%M}"


def _parse_local(value: str) -> dt.datetime | None:
    """A ``datetime-local`` value (``YYYY-MM-DDTHH:MM[:SS]``), or None."""
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is not None or parsed.year not in YEARS:
        return None
    return parsed


def _parse_date(value: str) -> dt.date | None:
    """A ``date`` value (``YYYY-MM-DD``), or None."""
    try:
        parsed = dt.date.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed if parsed.year in YEARS else None


def _exists_in(local: dt.datetime, tz_name: str) -> bool:
    """Whether the wall-clock time ``local`` happens in ``tz_name``.

    In the hour skipped when clocks go forward the round trip through UTC lands
    on a different wall-clock time (PEP 495 semantics of ``zoneinfo``).
    """
    tz = zone(tz_name)
    back = local.replace(tzinfo=tz).astimezone(dt.UTC).astimezone(tz)
    return back.replace(tzinfo=None) == local


@dataclass
class AppointmentForm:
    """The appointment form as typed (strings), plus its errors."""

    title: str = ""
    all_day: bool = False
    #: ``datetime-local`` values (timed appointments)
    start: str = ""
    end: str = ""
    #: ``date`` values (all-day appointments); ``last_date`` is inclusive
    start_date: str = ""
    last_date: str = ""
    timezone: str = "UTC"
    location: str = ""
    description: str = ""
    status: str = AppointmentStatus.CONFIRMED.value
    #: the version the form was loaded at (edits only; optimistic concurrency)
    version: str = ""
    #: field name (or :data:`FORM`) -> message
    errors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_form(cls, form: Mapping[str, Any]) -> AppointmentForm:
        """The values of a submitted form."""
        return cls(
            title=text(form, "title"),
            all_day=text(form, "all_day") in ("on", "true", "1"),
            start=text(form, "start"),
            end=text(form, "end"),
            start_date=text(form, "start_date"),
            last_date=text(form, "last_date"),
            timezone=text(form, "timezone").strip() or "UTC",
            location=text(form, "location"),
            description=text(form, "description"),
            status=text(form, "status") or AppointmentStatus.CONFIRMED.value,
            version=text(form, "version"),
        )

    @classmethod
    def from_appointment(cls, appointment: crm.Appointment) -> AppointmentForm:
        """The form showing a stored appointment, for editing."""
        span = appointment.span
        tz = zone(span.timezone)
        form = cls(
            title=appointment.title,
            all_day=span.all_day,
            timezone=span.timezone,
            location=appointment.location or "",
            description=appointment.description or "",
            status=appointment.status.value,
            version=str(appointment.version),
        )
        if span.all_day:
            form.start_date = span.start_date.isoformat()
            form.last_date = (span.end_date - dt.timedelta(days=1)).isoformat()
        else:
            form.start = _local_value(span.start_at.astimezone(tz))
            form.end = _local_value(span.end_at.astimezone(tz))
        return form

    @property
    def expected_version(self) -> int | None:
        """The version the edit was based on (None when not sent)."""
        return int(self.version) if self.version.isdigit() else None

    def _span(self) -> TimeSpan | None:
        """Check the time fields (recording errors); the span when they are valid."""
        zone_ok = True
        try:
            zone(self.timezone)
        except ValidationFailed:
            zone_ok = False
            self.errors["timezone"] = (
                f"{self.timezone!r} is not a time zone we know; choose one from "
                "the list (IANA names such as Europe/Berlin)."
            )
        # With an unknown zone the dates are still checked (as UTC), so every
        # mistake is reported at once rather than one per submission.
        tz_name = self.timezone if zone_ok else "UTC"
        span = (
            self._all_day_span(tz_name) if self.all_day else self._timed_span(tz_name)
        )
        return span if zone_ok else None

    def _all_day_span(self, tz_name: str) -> TimeSpan | None:
        first = _parse_date(self.start_date)
        if first is None:
            self.errors["start_date"] = (
                "Enter the first day as a date between the years 1900 and 2999, "
                "e.g. 2026-05-01."
                if self.start_date.strip()
                else "Enter the first day of the all-day appointment."
            )
            return None
        last = first
        if self.last_date.strip():
            parsed = _parse_date(self.last_date)
            if parsed is None:
                self.errors["last_date"] = (
                    "Enter the last day as a date (years 1900 to 2999), e.g. "
                    "2026-05-03, or leave it empty for a one-day appointment."
                )
                return None
            if parsed < first:
                self.errors["last_date"] = (
                    "The last day is before the first day; pick the same day or a "
                    "later one."
                )
                return None
            last = parsed
        return all_day_span(first, last + dt.timedelta(days=1), tz_name)

    def _timed_span(self, tz_name: str) -> TimeSpan | None:
        values: dict[str, dt.datetime] = {}
        for name, label in (("start", "start"), ("end", "end")):
            raw = getattr(self, name)
            if not raw.strip():
                self.errors[name] = (
                    f"Enter the {label} date and time, or tick 'All day'."
                )
                continue
            parsed = _parse_local(raw)
            if parsed is None:
                self.errors[name] = (
                    f"Enter the {label} as a date and time between the years 1900 "
                    "and 2999, e.g. 2026-05-01 09:30."
                )
                continue
            if not _exists_in(parsed, tz_name):
                self.errors[name] = (
                    f"{parsed:%H:%M} on {parsed:%Y-%m-%d} does not exist in "
                    f"{tz_name} (the clocks go forward then); choose another time."
                )
                continue
            values[name] = parsed
        if len(values) < 2:
            return None
        if values["end"] <= values["start"]:
            self.errors["end"] = (
                "The end must be after the start; check the date and the time."
            )
            return None
        return timed_span(values["start"], values["end"], tz_name)

    def validate(
        self, *, keep_from: crm.Appointment | None = None
    ) -> crm.AppointmentDraft | None:
        """The draft, or None with :attr:`errors` filled in.

        ``keep_from`` is the appointment being edited: fields this form does not
        show (attendees, recurrence rule) are carried over from it, so editing in
        the UI never drops what the API or a calendar sync set.
        """
        self.errors.clear()
        title = self.title.strip()
        if not title:
            self.errors["title"] = "Enter a title, e.g. 'Call with ACME'."
        elif len(title) > TITLE_MAX:
            self.errors["title"] = (
                f"The title is {len(title)} characters long; shorten it to "
                f"{TITLE_MAX} or fewer."
            )
        location = self.location.strip()
        if len(location) > LOCATION_MAX:
            self.errors["location"] = (
                f"The location is {len(location)} characters long; shorten it to "
                f"{LOCATION_MAX} or fewer."
            )
        description = self.description.strip()
        if len(description) > DESCRIPTION_MAX:
            self.errors["description"] = (
                f"The description is {len(description)} characters long; shorten "
                f"it to {DESCRIPTION_MAX} or fewer."
            )
        if self.status not in STATUS_LABELS:
            self.errors["status"] = "Choose Confirmed, Tentative or Cancelled."
        span = self._span()
        if self.errors or span is None:
            return None
        return crm.AppointmentDraft(
            title=title,
            span=span,
            description=description or None,
            location=location or None,
            attendees=keep_from.attendees if keep_from else (),
            status=AppointmentStatus(self.status),
            recurrence_rule=keep_from.recurrence_rule if keep_from else None,
        )
