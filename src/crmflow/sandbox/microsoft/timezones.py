"""Graph date/time rules: ``dateTimeTimeZone``, Windows time zone names, 7-digit fractions.

Facts (microsoft-graph.md §2.2, checklist 3-5):

* ``start``/``end`` are ``{"dateTime": "2017-04-15T11:00:00.0000000",
  "timeZone": "Pacific Standard Time"}``: local wall clock, **7 fractional
  digits, no offset**; UTC unless ``Prefer: outlook.timezone="<zone>"`` asks for
  another zone (echoed in ``Preference-Applied``).
* ``timeZone`` accepts every Windows name and IANA names
  (datetimetimezone.md). Windows names map to IANA through the CLDR
  ``windowsZones`` table (:mod:`._windows_zones`). The sandbox accepts every
  IANA name CLDR maps to a Windows zone plus ``UTC``/``Etc/*`` — a superset of
  Graph's fixed IANA list, documented in docs/sandbox.md (Part 2).
* ``lastModifiedDateTime`` and friends are UTC with 7 digits and ``Z``
  (``2019-05-20T00:14:51.2677891Z``).
* An unknown zone is 400 ``TimeZoneNotSupportedException``.
* Event times must lie between :data:`EARLIEST` and :data:`LATEST` (a day
  inside what Python represents, so conversions and expansion never overflow;
  Graph's own limits are undocumented): outside, 400 ``RequestBodyRead``.
  Query instants (``startDateTime``…) are clamped into that range.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from crmflow.sandbox.microsoft._windows_zones import IANA_TO_WINDOWS, WINDOWS_TO_IANA
from crmflow.sandbox.microsoft.errors import GraphError

__all__ = [
    "EARLIEST",
    "LATEST",
    "LocalTime",
    "format_local",
    "format_utc",
    "parse_date_time_zone",
    "parse_instant",
    "parse_prefer_timezone",
    "resolve_zone",
]

_WINDOWS_CASEFOLD = {name.casefold(): name for name in WINDOWS_TO_IANA}
_IANA_CASEFOLD = {name.casefold(): name for name in IANA_TO_WINDOWS}
_UTC_NAMES = {"utc", "etc/utc", "etc/gmt", "gmt", "tzone://microsoft/utc"}
#: earliest / latest accepted event instant (a day of slack to datetime.min/max)
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, tzinfo=UTC)
_LOCAL = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,7}))?)?)?$"
)


def unsupported_zone(name: str) -> GraphError:
    """400 for a time zone Graph does not know."""
    return GraphError(
        400,
        "TimeZoneNotSupportedException",
        "A valid TimeZone value must be specified. The following TimeZone value "
        f"is not supported: '{name}'.",
    )


def resolve_zone(name: str) -> ZoneInfo:
    """Return the zone for a Windows or IANA name (case-insensitive).

    Raises:
        GraphError: 400 ``TimeZoneNotSupportedException`` for unknown names,
            including ``tzone://Microsoft/Custom`` (a legacy Outlook custom
            zone that cannot be resolved without its definition).
    """
    key = name.strip().casefold()
    if key in _UTC_NAMES:
        return ZoneInfo("UTC")
    windows = _WINDOWS_CASEFOLD.get(key)
    if windows is not None:
        return ZoneInfo(WINDOWS_TO_IANA[windows])
    iana = _IANA_CASEFOLD.get(key)
    if iana is None and key.startswith("etc/"):
        iana = name.strip()
    if iana is not None:
        try:
            return ZoneInfo(iana)
        except ZoneInfoNotFoundError:
            pass
    raise unsupported_zone(name)


def canonical_zone_name(name: str) -> str:
    """Return the spelling Graph echoes: Windows names in their canonical case, IANA as given."""
    key = name.strip().casefold()
    if key in {"utc", "etc/utc"}:
        return "UTC"
    return _WINDOWS_CASEFOLD.get(key) or _IANA_CASEFOLD.get(key) or name.strip()


def format_local(value: datetime) -> str:
    """``2017-04-15T11:00:00.0000000``: wall clock, 7 fractional digits, no offset."""
    # isoformat, not strftime("%Y"): strftime does not zero-pad years < 1000.
    text = value.replace(tzinfo=None, microsecond=0).isoformat(timespec="seconds")
    return f"{text}.{value.microsecond:06d}0"


def format_utc(value: datetime) -> str:
    """``2019-05-20T00:14:51.2677891Z``: UTC, 7 fractional digits, ``Z``."""
    return format_local(value.astimezone(UTC)) + "Z"


def format_offset(value: datetime) -> str:
    """``2023-05-26T23:29:18.2277768+00:00`` (subscriptionExpirationDateTime in notifications)."""
    return format_local(value.astimezone(UTC)) + "+00:00"


@dataclass(frozen=True)
class LocalTime:
    """A parsed ``dateTimeTimeZone``."""

    #: wall clock in ``zone_name`` (naive)
    wall: datetime
    #: the name as Graph echoes it (``originalStartTimeZone``)
    zone_name: str
    zone: ZoneInfo
    #: the dateTime had no time part (``"2019-11-11"``)
    date_only: bool

    @property
    def instant(self) -> datetime:
        """The UTC instant (``fold=0`` for ambiguous wall times, like Exchange)."""
        return self.wall.replace(tzinfo=self.zone).astimezone(UTC)


def parse_date_time_zone(value: object, field: str) -> LocalTime:
    """Parse a request's ``{"dateTime", "timeZone"}`` object.

    A ``dateTime`` may carry up to 7 fractional digits; an offset or ``Z`` is
    honoured (converted into ``timeZone``). A missing ``timeZone`` means UTC.

    Raises:
        GraphError: 400 for a malformed object or an unsupported zone.
    """
    if not isinstance(value, dict):
        raise GraphError(
            400,
            "RequestBodyRead",
            f"Property '{field}' must be a dateTimeTimeZone object.",
        )
    raw = value.get("dateTime")
    zone_raw = value.get("timeZone") or "UTC"
    if not isinstance(raw, str) or not isinstance(zone_raw, str):
        raise GraphError(
            400,
            "ErrorInvalidRequest",
            f"Your request can't be completed. The '{field}' value is missing a dateTime.",
        )
    zone = resolve_zone(zone_raw)
    text = raw.strip()
    offset_match = re.search(r"(Z|[+-]\d{2}:\d{2})$", text)
    if offset_match:
        try:
            aware = datetime.fromisoformat(text.replace("Z", "+00:00"))
            wall = aware.astimezone(zone).replace(tzinfo=None)
        except (ValueError, OverflowError) as exc:
            raise _bad_datetime(field, raw) from exc
        return _in_range(
            LocalTime(wall, canonical_zone_name(zone_raw), zone, date_only=False),
            field,
            raw,
        )
    match = _LOCAL.match(text)
    if not match:
        raise _bad_datetime(field, raw)
    year, month, day, hour, minute, second, frac = match.groups()
    try:
        wall = datetime(  # noqa: DTZ001 - a wall clock; the zone is applied by LocalTime
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((frac or "0").ljust(7, "0")[:6]),
        )
    except ValueError as exc:
        raise _bad_datetime(field, raw) from exc
    return _in_range(
        LocalTime(wall, canonical_zone_name(zone_raw), zone, date_only=hour is None),
        field,
        raw,
    )


def _in_range(value: LocalTime, field: str, raw: object) -> LocalTime:
    """``value`` if its instant lies in [EARLIEST, LATEST], else 400 RequestBodyRead."""
    try:
        instant = value.instant
    except OverflowError as exc:
        raise _bad_datetime(field, raw) from exc
    if not EARLIEST <= instant <= LATEST:
        raise _bad_datetime(field, raw)
    return value


def _bad_datetime(field: str, raw: object) -> GraphError:
    return GraphError(
        400,
        "RequestBodyRead",
        f"Cannot convert the literal '{raw}' to the expected type 'Edm.DateTime' of '{field}'.",
    )


def parse_instant(raw: str, parameter: str) -> datetime:
    """Parse a query-string instant (``startDateTime``): an offset is honoured, none means UTC.

    Raises:
        GraphError: 400 ``ErrorInvalidParameter`` for an unparsable value.
    """
    text = raw.strip().replace(" ", "+")
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise GraphError(
            400,
            "ErrorInvalidParameter",
            f"The value '{raw}' of parameter '{parameter}' is invalid.",
        ) from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        instant = parsed.astimezone(UTC)
    except OverflowError:
        # e.g. 0001-01-01T00:00:00+14:00: before anything an event can touch
        instant = EARLIEST if parsed.year == 1 else LATEST
    # Clamped: every event lies inside, and window arithmetic cannot overflow.
    return min(max(instant, EARLIEST), LATEST)


def parse_prefer_timezone(prefer: list[str]) -> tuple[str, ZoneInfo] | None:
    """Return the ``outlook.timezone`` preference (name as sent, zone), if valid.

    An unknown zone is ignored (no ``Preference-Applied``): the response stays UTC.
    """
    for item in prefer:
        name, _, value = item.partition("=")
        if name.strip().casefold() != "outlook.timezone":
            continue
        zone_name = value.strip().strip('"')
        try:
            return zone_name, resolve_zone(zone_name)
        except GraphError:
            return None
    return None


def midnight(day: date) -> datetime:
    """Naive midnight of ``day`` (all-day events are floating dates)."""
    return datetime.combine(day, time(0))


def whole_days(start: datetime, end: datetime) -> int:
    """Number of days between two naive midnights."""
    return (end - start) // timedelta(days=1)
