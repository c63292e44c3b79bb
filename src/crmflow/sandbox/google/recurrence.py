"""Recurring events: RRULE / EXRULE / RDATE / EXDATE expansion and instance ids.

Google's rules (Calendar discovery ``Event.recurrence``, recurring-events guide,
google-apis.md §2.6):

* ``recurrence`` holds "RRULE, EXRULE, RDATE and EXDATE lines ... as specified in
  RFC5545. Note that DTSTART and DTEND lines are not allowed in this field."
* The series' ``start``/``end`` are those of the first instance;
  ``start.timeZone`` "specifies the time zone in which the recurrence is
  expanded" — wall-clock times stay fixed across DST changes. All-day series
  expand over dates.
* Instance ids [OBS, real payloads]: ``<masterId>_<YYYYMMDDTHHMMSSZ>`` (the
  original start in UTC) for timed series, ``<masterId>_<YYYYMMDD>`` for
  all-day series.

RRULE/EXRULE are expanded with python-dateutil's ``rrulestr``; RDATE/EXDATE
lines are parsed here because dateutil rejects ``TZID`` parameters on them.
RFC 5545 §3.3.10: with a zoned DTSTART, ``UNTIL`` must be UTC; a date or local
``UNTIL`` is converted (a date means "through the end of that day").
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from dateutil.rrule import rrule, rruleset, rrulestr

from crmflow.sandbox.google.eventtime import LATEST, EventTime, TimeError, zone

__all__ = [
    "EXPANSION_LIMIT",
    "RecurrenceError",
    "Series",
    "build_series",
    "instance_suffix",
    "split_instance_id",
]

#: instances returned per series when the query sets no upper bound
#: (the sandbox's own cap; Google's horizon is undocumented)
EXPANSION_LIMIT = 730
#: safety stop for iterating a rule from its first instance
_SCAN_LIMIT = 200_000

_UNTIL = re.compile(r"UNTIL=([0-9TZ]+)", re.IGNORECASE)
_INSTANCE = re.compile(r"^(.+)_(\d{8}(?:T\d{6}Z)?)$")


class RecurrenceError(ValueError):
    """The recurrence lines are invalid (Google: 400 "Invalid recurrence rule.")."""


@dataclass(frozen=True)
class Series:
    """An expandable recurring event."""

    start: EventTime
    #: end - start of every generated instance
    duration: timedelta
    rules: rruleset
    #: zone the recurrence is expanded in
    tz: ZoneInfo

    @property
    def all_day(self) -> bool:
        """True for a series of all-day instances."""
        return self.start.all_day

    def occurrences(
        self,
        *,
        starts_after: datetime | None = None,
        starts_before: datetime | None = None,
        limit: int = EXPANSION_LIMIT,
    ) -> Iterator[EventTime]:
        """Yield original starts in order, optionally within (after, before) exclusive bounds.

        ``starts_after`` / ``starts_before`` are UTC instants; all-day starts are
        midnight in :attr:`tz`.
        """
        produced = 0
        # Instances ending past LATEST cannot be represented (or rendered).
        last_start = LATEST - self.duration
        for scanned, occurrence in enumerate(self.rules):
            if scanned >= _SCAN_LIMIT or produced >= limit:
                return
            value = self._event_time(occurrence)
            instant = value.start_in(self.tz)
            if instant > last_start:
                return
            if starts_before is not None and instant >= starts_before:
                return
            if starts_after is not None and instant <= starts_after:
                continue
            produced += 1
            yield value

    def contains(self, original: EventTime) -> bool:
        """True when ``original`` is a start the rules generate."""
        target = original.start_in(self.tz)
        for value in self.occurrences(
            starts_after=target - timedelta(seconds=1),
            starts_before=target + timedelta(seconds=1),
            limit=1,
        ):
            return value.start_in(self.tz) == target
        return False

    def _event_time(self, occurrence: datetime) -> EventTime:
        if self.start.all_day:
            return EventTime(occurrence.date(), None, self.start.tz_name)
        return EventTime(None, occurrence.astimezone(UTC), self.start.tz_name)


def instance_suffix(original: EventTime) -> str:
    """Return the id suffix for an instance starting (originally) at ``original``."""
    # Explicit widths: strftime("%Y") does not zero-pad years < 1000.
    if original.day is not None:
        d = original.day
        return f"{d.year:04d}{d.month:02d}{d.day:02d}"
    assert original.instant is not None  # noqa: S101 - EventTime invariant
    t = original.instant.astimezone(UTC)
    return (
        f"{t.year:04d}{t.month:02d}{t.day:02d}"
        f"T{t.hour:02d}{t.minute:02d}{t.second:02d}Z"
    )


def split_instance_id(event_id: str) -> tuple[str, EventTime] | None:
    """Split ``<masterId>_<suffix>`` into the master id and original start, if it is one."""
    m = _INSTANCE.match(event_id)
    if m is None:
        return None
    suffix = m.group(2)
    try:
        if "T" in suffix:
            instant = datetime.strptime(suffix, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            return m.group(1), EventTime(None, instant, None)
        day = datetime.strptime(suffix, "%Y%m%d").replace(tzinfo=UTC).date()
    except ValueError:
        return None
    return m.group(1), EventTime(day, None, None)


def build_series(
    lines: list[str], start: EventTime, end: EventTime, fallback: ZoneInfo
) -> Series:
    """Parse ``recurrence`` lines for a series starting at ``start``.

    Args:
        lines: the event's ``recurrence`` list.
        start, end: the first instance (validated EventTimes of one kind).
        fallback: zone for all-day series and zone-less values (the calendar's).

    Raises:
        RecurrenceError: unparsable or disallowed lines.
    """
    try:
        tz = zone(start.tz_name) if start.tz_name else fallback
    except TimeError as exc:
        raise RecurrenceError(str(exc)) from exc
    if start.all_day:
        assert start.day is not None  # noqa: S101 - same kind
        assert end.day is not None  # noqa: S101 - same kind
        dtstart = datetime.combine(start.day, time(0))
        duration = timedelta(days=(end.day - start.day).days)
    else:
        assert start.instant is not None  # noqa: S101 - same kind
        assert end.instant is not None  # noqa: S101 - same kind
        dtstart = start.instant.astimezone(tz)
        duration = end.instant - start.instant
    rules = rruleset()
    has_rule = False
    for line in lines:
        if not isinstance(line, str) or ":" not in line:
            raise RecurrenceError(f"bad recurrence line {line!r}")
        head, _, value = line.strip().partition(":")
        name, *params = head.split(";")
        name = name.upper()
        if name in ("RRULE", "EXRULE"):
            rule = _parse_rule(value, dtstart, tz, all_day=start.all_day)
            if name == "RRULE":
                rules.rrule(rule)
                has_rule = True
            else:
                rules.exrule(rule)
        elif name in ("RDATE", "EXDATE"):
            for moment in _parse_dates(
                params, value, dtstart, tz, all_day=start.all_day
            ):
                if name == "RDATE":
                    rules.rdate(moment)
                    has_rule = True
                else:
                    rules.exdate(moment)
        else:
            # DTSTART / DTEND are explicitly not allowed; anything else is unknown.
            raise RecurrenceError(f"unsupported recurrence line {name}")
    if not has_rule:
        raise RecurrenceError("no RRULE or RDATE")
    # The first instance is always part of the series (RFC 5545 §3.8.5.3:
    # DTSTART is the first instance) unless an EXDATE removes it.
    rules.rdate(dtstart)
    return Series(start=start, duration=duration, rules=rules, tz=tz)


def _parse_rule(value: str, dtstart: datetime, tz: ZoneInfo, *, all_day: bool) -> rrule:
    parts = {p.split("=", 1)[0].upper() for p in value.split(";") if p}
    if "COUNT" in parts and "UNTIL" in parts:
        raise RecurrenceError("COUNT and UNTIL are exclusive (RFC 5545 §3.3.10)")

    def fix_until(m: re.Match[str]) -> str:
        raw = m.group(1).upper()
        try:
            if all_day:
                # Date series: compare against naive midnights.
                return "UNTIL=" + raw.rstrip("Z")
            if raw.endswith("Z"):
                return "UNTIL=" + raw
            if "T" in raw:
                local = datetime.strptime(raw, "%Y%m%dT%H%M%S").replace(tzinfo=tz)
            else:
                day = datetime.strptime(raw, "%Y%m%d").replace(tzinfo=tz)
                local = day + timedelta(days=1, seconds=-1)
        except ValueError as exc:
            raise RecurrenceError(f"bad UNTIL {raw}") from exc
        return "UNTIL=" + local.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")

    text = _UNTIL.sub(fix_until, value)
    try:
        parsed = rrulestr(text, dtstart=dtstart)
    except (ValueError, TypeError) as exc:
        raise RecurrenceError(str(exc)) from exc
    if not isinstance(parsed, rrule):  # pragma: no cover - rrulestr without forceset
        raise RecurrenceError("expected one rule")
    return parsed


def _parse_dates(
    params: list[str], value: str, dtstart: datetime, tz: ZoneInfo, *, all_day: bool
) -> list[datetime]:
    source_tz: ZoneInfo | None = None
    value_type = "DATE-TIME"
    for param in params:
        key, _, pval = param.partition("=")
        if key.upper() == "TZID":
            try:
                source_tz = zone(pval)
            except TimeError as exc:
                raise RecurrenceError(str(exc)) from exc
        elif key.upper() == "VALUE":
            value_type = pval.upper()
    if value_type == "PERIOD":
        raise RecurrenceError("PERIOD values are not supported")
    out: list[datetime] = []
    for item in value.split(","):
        item = item.strip().upper()
        try:
            if len(item) == 8:
                day: date = datetime.strptime(item, "%Y%m%d").replace(tzinfo=UTC).date()
                if all_day:
                    out.append(datetime.combine(day, time(0)))
                else:
                    out.append(
                        datetime.combine(day, dtstart.timetz()).replace(tzinfo=tz)
                    )
                continue
            if item.endswith("Z"):
                instant = datetime.strptime(item, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            else:
                instant = datetime.strptime(item, "%Y%m%dT%H%M%S").replace(
                    tzinfo=source_tz or tz
                )
        except ValueError as exc:
            raise RecurrenceError(f"bad date {item}") from exc
        if all_day:
            out.append(datetime.combine(instant.astimezone(tz).date(), time(0)))
        else:
            out.append(instant.astimezone(tz))
    return out
