"""``patternedRecurrence``: validation, normalisation and expansion of Outlook series.

Graph's rules (recurrencepattern.md, recurrencerange.md; microsoft-graph.md
§2.4, checklist 8):

* ``pattern.type`` is one of six kinds, each with required properties:

  ============== ===========================================
  daily          interval
  weekly         interval, daysOfWeek (firstDayOfWeek)
  absoluteMonthly interval, dayOfMonth
  relativeMonthly interval, daysOfWeek (+ index)
  absoluteYearly interval, dayOfMonth, month
  relativeYearly interval, daysOfWeek, month (+ index)
  ============== ===========================================

  ``index`` defaults to ``first``, ``firstDayOfWeek`` to ``sunday``. "Any
  property that you include that does not have a supported value would result
  in an error."
* ``range.type`` is ``endDate`` (``endDate`` required), ``noEnd`` or
  ``numbered`` (``numberOfOccurrences`` > 0); dates are ``YYYY-MM-DD``.
* Responses return **every** field, zero/default for unused ones, enums
  lower-cased (request ``"Monday"`` -> ``"monday"``).

Expansion uses python-dateutil's ``rrule`` in the recurrence time zone, so the
wall-clock time stays fixed across DST changes (as in Outlook).
``absoluteMonthly`` on day 29-31 falls on the month's last day in shorter
months (Outlook's behaviour; an RFC 5545 RRULE would skip those months).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from dateutil.rrule import (
    DAILY,
    FR,
    MO,
    MONTHLY,
    SA,
    SU,
    TH,
    TU,
    WE,
    WEEKLY,
    YEARLY,
    rrule,
    weekday,
)

from crmflow.sandbox.microsoft.errors import GraphError
from crmflow.sandbox.microsoft.timezones import (
    LATEST,
    canonical_zone_name,
    resolve_zone,
)

__all__ = ["expand", "normalize_recurrence", "recurrence_zone"]

#: sandbox cap on occurrences produced for one window (Graph's limit is undocumented)
MAX_OCCURRENCES = 5000

PATTERN_TYPES = (
    "daily",
    "weekly",
    "absoluteMonthly",
    "relativeMonthly",
    "absoluteYearly",
    "relativeYearly",
)
RANGE_TYPES = ("endDate", "noEnd", "numbered")
DAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
INDEXES = ("first", "second", "third", "fourth", "last")
_RRULE_DAYS: dict[str, weekday] = {
    "sunday": SU,
    "monday": MO,
    "tuesday": TU,
    "wednesday": WE,
    "thursday": TH,
    "friday": FR,
    "saturday": SA,
}
_SETPOS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "last": -1}
_REQUIRED: dict[str, tuple[str, ...]] = {
    "daily": ("interval",),
    "weekly": ("interval", "daysOfWeek"),
    "absoluteMonthly": ("interval", "dayOfMonth"),
    "relativeMonthly": ("interval", "daysOfWeek"),
    "absoluteYearly": ("interval", "dayOfMonth", "month"),
    "relativeYearly": ("interval", "daysOfWeek", "month"),
}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _invalid(message: str) -> GraphError:
    return GraphError(400, "ErrorInvalidRequest", message)


def _enum(value: object, allowed: tuple[str, ...], what: str) -> str:
    if isinstance(value, str):
        for item in allowed:
            if item.casefold() == value.casefold():
                return item
    raise _invalid(
        f"Your request can't be completed. '{value}' is not a valid value for {what}."
    )


def _positive_int(value: object, what: str, *, allow_zero: bool = False) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < (0 if allow_zero else 1)
    ):
        raise _invalid(
            f"Your request can't be completed. '{value}' is not a valid value for {what}."
        )
    return value


def _date(value: object, what: str) -> str:
    if not isinstance(value, str) or not _DATE.match(value):
        raise _invalid(
            f"Your request can't be completed. '{value}' is not a valid value for {what}."
        )
    try:
        date.fromisoformat(value)
    except ValueError as exc:
        raise _invalid(
            f"Your request can't be completed. '{value}' is not a valid value for {what}."
        ) from exc
    return value


def normalize_recurrence(
    raw: object, *, default_zone: str, start_date: date
) -> dict[str, Any] | None:
    """Validate a request's ``recurrence`` and return the full response form.

    ``None`` (or JSON null) removes the recurrence. ``range.startDate`` defaults
    to the event's start date; ``recurrenceTimeZone`` to the start's zone.

    Raises:
        GraphError: 400 ``ErrorInvalidRequest`` for a missing required property or
            an unsupported value.
    """
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _invalid(
            "Your request can't be completed. The recurrence must be an object."
        )
    pattern = raw.get("pattern")
    rng = raw.get("range")
    if not isinstance(pattern, dict) or not isinstance(rng, dict):
        raise _invalid(
            "Your request can't be completed. A recurrence needs a pattern and a range."
        )
    kind = _enum(pattern.get("type"), PATTERN_TYPES, "RecurrencePattern.Type")
    for name in _REQUIRED[kind]:
        if pattern.get(name) in (None, [], 0):
            raise _invalid(
                f"Your request can't be completed. The recurrence pattern '{kind}' requires '{name}'."
            )
    days_raw = pattern.get("daysOfWeek") or []
    if not isinstance(days_raw, list):
        raise _invalid("Your request can't be completed. 'daysOfWeek' must be a list.")
    days = [_enum(d, DAYS, "DayOfWeek") for d in days_raw]
    month = pattern.get("month", 0) or 0
    day_of_month = pattern.get("dayOfMonth", 0) or 0
    _positive_int(month, "RecurrencePattern.Month", allow_zero=True)
    _positive_int(day_of_month, "RecurrencePattern.DayOfMonth", allow_zero=True)
    if month > 12 or day_of_month > 31:
        raise _invalid(
            "Your request can't be completed. The recurrence pattern is invalid."
        )
    norm_pattern = {
        "type": kind,
        "interval": _positive_int(
            pattern.get("interval"), "RecurrencePattern.Interval"
        ),
        "month": month,
        "dayOfMonth": day_of_month,
        "daysOfWeek": days,
        "firstDayOfWeek": _enum(
            pattern.get("firstDayOfWeek") or "sunday", DAYS, "DayOfWeek"
        ),
        "index": _enum(pattern.get("index") or "first", INDEXES, "WeekIndex"),
    }
    range_type = _enum(rng.get("type"), RANGE_TYPES, "RecurrenceRange.Type")
    start = _date(
        rng.get("startDate") or start_date.isoformat(), "RecurrenceRange.StartDate"
    )
    end = "0001-01-01"
    count = 0
    if range_type == "endDate":
        end = _date(rng.get("endDate"), "RecurrenceRange.EndDate")
        if end < start:
            raise _invalid(
                "Your request can't be completed. The recurrence end date is before its start date."
            )
    elif range_type == "numbered":
        count = _positive_int(
            rng.get("numberOfOccurrences"), "RecurrenceRange.NumberOfOccurrences"
        )
    zone_raw = rng.get("recurrenceTimeZone") or default_zone
    if not isinstance(zone_raw, str):
        raise _invalid(
            "Your request can't be completed. recurrenceTimeZone must be a string."
        )
    resolve_zone(zone_raw)
    return {
        "pattern": norm_pattern,
        "range": {
            "type": range_type,
            "startDate": start,
            "endDate": end,
            "recurrenceTimeZone": canonical_zone_name(zone_raw),
            "numberOfOccurrences": count,
        },
    }


def recurrence_zone(recurrence: dict[str, Any]) -> ZoneInfo:
    """The zone a normalised recurrence expands in."""
    return resolve_zone(str(recurrence["range"]["recurrenceTimeZone"]))


def _rule(recurrence: dict[str, Any], first_start: datetime) -> rrule:
    pattern = recurrence["pattern"]
    rng = recurrence["range"]
    kind = pattern["type"]
    interval = int(pattern["interval"])
    days = [_RRULE_DAYS[d] for d in pattern["daysOfWeek"]]
    setpos = _SETPOS[pattern["index"]]
    kwargs: dict[str, Any] = {"dtstart": first_start, "interval": interval}
    freq: Literal[0, 1, 2, 3, 4, 5, 6]
    if kind == "daily":
        freq = DAILY
    elif kind == "weekly":
        freq = WEEKLY
        kwargs["byweekday"] = days
        kwargs["wkst"] = _RRULE_DAYS[pattern["firstDayOfWeek"]]
    elif kind in ("absoluteMonthly", "absoluteYearly"):
        freq = MONTHLY if kind == "absoluteMonthly" else YEARLY
        day = int(pattern["dayOfMonth"])
        if kind == "absoluteYearly":
            kwargs["bymonth"] = int(pattern["month"])
        if day > 28:
            # Outlook: the last day of months shorter than ``day``.
            kwargs["bymonthday"] = list(range(28, day + 1))
            kwargs["bysetpos"] = -1
        else:
            kwargs["bymonthday"] = day
    else:
        freq = MONTHLY if kind == "relativeMonthly" else YEARLY
        if kind == "relativeYearly":
            kwargs["bymonth"] = int(pattern["month"])
        kwargs["byweekday"] = days
        kwargs["bysetpos"] = setpos
    if rng["type"] == "numbered":
        kwargs["count"] = int(rng["numberOfOccurrences"])
    elif rng["type"] == "endDate":
        end = date.fromisoformat(rng["endDate"])
        kwargs["until"] = datetime.combine(
            end, time(23, 59, 59), tzinfo=first_start.tzinfo
        )
    return rrule(freq, **kwargs)


def expand(
    recurrence: dict[str, Any],
    *,
    start_time: time,
    window_start: datetime | None = None,
    window_end: datetime | None = None,
    duration: timedelta = timedelta(0),
    limit: int = MAX_OCCURRENCES,
) -> Iterator[datetime]:
    """Yield the original starts (UTC) of the series, in order.

    The first candidate is ``range.startDate`` at ``start_time`` (wall clock in
    the recurrence zone). With a window, only occurrences overlapping
    ``[window_start, window_end)`` are yielded (``duration`` decides overlap).
    """
    zone = recurrence_zone(recurrence)
    first = datetime.combine(
        date.fromisoformat(recurrence["range"]["startDate"]), start_time, tzinfo=zone
    )
    produced = 0
    # Occurrences ending past LATEST cannot be represented (or rendered).
    last_start = LATEST - max(duration, timedelta(0))
    for local in _rule(recurrence, first):
        instant = local.astimezone(UTC)
        if window_end is not None and instant >= window_end:
            return
        if instant > last_start:
            return
        if (
            window_start is not None
            and instant + max(duration, timedelta(0)) <= window_start
            and not (duration == timedelta(0) and instant == window_start)
        ):
            continue
        produced += 1
        if produced > limit:
            return
        yield instant
