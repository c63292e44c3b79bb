"""Recurring appointments for a person: "repeats weekly on Monday".

Public surface: :func:`describe_rule` (an RFC 5545 ``RRULE`` value in words).
It is forgiving: a rule it cannot read is described as "repeats", because the
list must render whatever a calendar sent. When a series meets is worked out
by :mod:`crmflow.domain.recurrence` (through the repository's range query).
"""

from __future__ import annotations

import datetime as dt

_UNITS = {
    "SECONDLY": ("every second", "second"),
    "MINUTELY": ("every minute", "minute"),
    "HOURLY": ("hourly", "hour"),
    "DAILY": ("daily", "day"),
    "WEEKLY": ("weekly", "week"),
    "MONTHLY": ("monthly", "month"),
    "YEARLY": ("yearly", "year"),
}
_DAYS = {
    "MO": "Monday",
    "TU": "Tuesday",
    "WE": "Wednesday",
    "TH": "Thursday",
    "FR": "Friday",
    "SA": "Saturday",
    "SU": "Sunday",
}
_WORKDAYS = ("MO", "TU", "WE", "TH", "FR")
_ORDINALS = {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth", -1: "last"}
_MONTHS = (
    "January", "February", "March", "April", "May", "June", "July",
    "August", "September", "October", "November", "December",
)  # fmt: skip


def _parts(rule: str) -> dict[str, str]:
    text = rule.strip()
    if text.upper().startswith("RRULE:"):
        text = text[len("RRULE:") :]
    parts: dict[str, str] = {}
    for chunk in text.split(";"):
        key, _, value = chunk.partition("=")
        if key.strip() and value.strip():
            parts[key.strip().upper()] = value.strip()
    return parts


def _join(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def _weekday(token: str) -> str | None:
    """``MO`` -> Monday, ``2TU`` -> the second Tuesday, ``-1FR`` -> the last Friday."""
    code = token[-2:].upper()
    day = _DAYS.get(code)
    if day is None:
        return None
    prefix = token[:-2]
    if not prefix:
        return day
    try:
        ordinal = _ORDINALS.get(int(prefix))
    except ValueError:
        return None
    return f"the {ordinal} {day}" if ordinal else None


def _until(value: str) -> str | None:
    """An ``UNTIL`` value (``20260601`` or ``20260601T000000Z``) as a day."""
    try:
        day = dt.date(int(value[0:4]), int(value[4:6]), int(value[6:8]))
    except ValueError:
        return None
    return f"{day:%a} {day.day} {day:%b %Y}"


def describe_rule(rule: str | None) -> str:
    """An RRULE value in words, lower case: ``repeats weekly on Monday``,
    ``repeats every 2 weeks on Monday and Wednesday, 10 times``, ``repeats
    monthly on the last Friday, until Mon 1 Jun 2026``. ``""`` for no rule;
    ``repeats`` for a rule it cannot read."""
    if not rule or not rule.strip():
        return ""
    parts = _parts(rule)
    unit = _UNITS.get(parts.get("FREQ", ""))
    if unit is None:
        return "repeats"
    interval = parts.get("INTERVAL", "1")
    words = (
        unit[0]
        if interval in ("", "1") or not interval.isdigit()
        else f"every {int(interval)} {unit[1]}s"
    )
    text = f"repeats {words}"
    by_day = [t for t in parts.get("BYDAY", "").split(",") if t]
    days = [_weekday(t) for t in by_day]
    if days and all(d is not None for d in days):
        if sorted(t.upper() for t in by_day) == sorted(_WORKDAYS):
            text += " on weekdays"
        else:
            text += " on " + _join([d for d in days if d])
    month_days = [d for d in parts.get("BYMONTHDAY", "").split(",") if d]
    months = [m for m in parts.get("BYMONTH", "").split(",") if m.isdigit()]
    month_names = (
        [_MONTHS[int(m) - 1] for m in months]
        if months and all(1 <= int(m) <= 12 for m in months)
        else []
    )
    if len(month_days) == 1 and len(month_names) == 1 and not days:
        text += f" on {month_days[0]} {month_names[0]}"
    else:
        if month_days and not days:
            text += " on day " + _join(month_days)
        if month_names:
            text += " in " + _join(month_names)
    count = parts.get("COUNT", "")
    if count.isdigit():
        text += f", {int(count)} time{'' if count == '1' else 's'}"
    until = _until(parts.get("UNTIL", ""))
    if until:
        text += f", until {until}"
    return text
