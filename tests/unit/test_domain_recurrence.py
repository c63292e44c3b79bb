"""Series expansion (``crmflow.domain.recurrence``): wall clock across
daylight-saving changes, EXDATE/RDATE, date and floating UNTIL, all-day series,
the next start after an instant, and lines that cannot be read."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from crmflow.domain.appointments import all_day_span, timed_span
from crmflow.domain.crm import OccurrenceChange
from crmflow.domain.recurrence import next_start, occurrence_starts

BERLIN = ZoneInfo("Europe/Berlin")
UTC = dt.UTC


def berlin(day: int, month: int = 3, hour: int = 9) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, tzinfo=BERLIN)


#: a one-hour 09:00 Berlin meeting on Monday 16 March 2026; Berlin moves to
#: summer time on Sunday 29 March
MONDAY = timed_span(berlin(16), berlin(16, hour=10), "Europe/Berlin")
SPRING = (dt.datetime(2026, 3, 1, tzinfo=UTC), dt.datetime(2026, 5, 1, tzinfo=UTC))


def test_a_weekly_series_keeps_its_wall_clock_across_a_dst_change():
    starts = occurrence_starts(MONDAY, ["RRULE:FREQ=WEEKLY;COUNT=4"], *SPRING)
    assert starts == [
        berlin(16).astimezone(UTC),  # 08:00 UTC in winter time
        berlin(23).astimezone(UTC),
        berlin(30).astimezone(UTC),  # 07:00 UTC in summer time
        berlin(6, 4).astimezone(UTC),
    ]
    assert [s.hour for s in starts] == [8, 8, 7, 7]  # type: ignore[union-attr]


def test_exdate_and_rdate_with_a_zone_remove_and_add_occurrences():
    lines = [
        "RRULE:FREQ=WEEKLY;COUNT=4",
        "EXDATE;TZID=Europe/Berlin:20260323T090000",
        "RDATE;TZID=Europe/Berlin:20260325T090000",
    ]
    starts = occurrence_starts(MONDAY, lines, *SPRING)
    assert starts == [
        berlin(16).astimezone(UTC),
        berlin(25).astimezone(UTC),
        berlin(30).astimezone(UTC),
        berlin(6, 4).astimezone(UTC),
    ]


@pytest.mark.parametrize(
    "until",
    ["20260330T070000Z", "20260330T090000", "20260331"],
    ids=["utc", "floating", "date"],
)
def test_until_in_utc_floating_or_as_a_date_ends_the_series(until: str):
    starts = occurrence_starts(MONDAY, [f"RRULE:FREQ=WEEKLY;UNTIL={until}"], *SPRING)
    assert starts is not None
    assert starts[-1] == berlin(30).astimezone(UTC)
    assert len(starts) == 3


def test_an_all_day_series_gives_dates():
    span = all_day_span(dt.date(2026, 3, 2), None, "Europe/Berlin")
    starts = occurrence_starts(span, ["RRULE:FREQ=MONTHLY;UNTIL=20260502"], *SPRING)
    assert starts == [dt.date(2026, 3, 2), dt.date(2026, 4, 2)]
    assert next_start(span, ["RRULE:FREQ=MONTHLY;UNTIL=20260502"], SPRING[1]) == (
        dt.date(2026, 5, 2)
    )


def test_the_next_start_skips_the_occurrence_in_progress():
    weekly = ["RRULE:FREQ=WEEKLY;COUNT=4"]
    during_second = berlin(23, hour=9) + dt.timedelta(minutes=30)
    assert next_start(MONDAY, weekly, during_second) == berlin(30).astimezone(UTC)
    assert next_start(MONDAY, weekly, berlin(1)) == berlin(16).astimezone(UTC)
    # after the last occurrence began: none to come
    assert next_start(MONDAY, weekly, berlin(6, 4, hour=9)) is None
    assert next_start(MONDAY, ["RRULE:FREQ=WEEKLY"], berlin(1, 12)) == (
        berlin(7, 12).astimezone(UTC)
    )


def test_the_next_start_skips_cancelled_and_counts_moved_occurrences():
    weekly = ["RRULE:FREQ=WEEKLY;COUNT=4"]  # 16, 23, 30 March, 6 April
    cancelled_23 = OccurrenceChange(berlin(23), None)
    assert next_start(MONDAY, weekly, berlin(17), [cancelled_23]) == (
        berlin(30).astimezone(UTC)
    )
    # the 30th moved to the 31st, and the 23rd to after it: the 31st is next
    moved = [
        OccurrenceChange(berlin(30), berlin(31)),
        OccurrenceChange(berlin(23), berlin(2, 4)),
    ]
    assert next_start(MONDAY, weekly, berlin(17), moved) == berlin(31)
    # moved earlier than the instant: it has passed, the rule's next counts
    early = [OccurrenceChange(berlin(23), berlin(17, hour=8))]
    assert next_start(MONDAY, weekly, berlin(17), early) == berlin(30).astimezone(UTC)
    # every remaining occurrence cancelled, or one moved past the series' end
    gone = [OccurrenceChange(berlin(d, m), None) for d, m in ((30, 3), (6, 4))]
    assert next_start(MONDAY, weekly, berlin(24), gone) is None
    late = [OccurrenceChange(berlin(6, 4), berlin(20, 4))]
    assert next_start(MONDAY, weekly, berlin(7, 4), late) == berlin(20, 4)
    # an EXDATE line is skipped as well
    exdate = [*weekly, "EXDATE;TZID=Europe/Berlin:20260330T090000"]
    assert next_start(MONDAY, exdate, berlin(24), [cancelled_23]) == (
        berlin(6, 4).astimezone(UTC)
    )


def test_an_all_day_series_skips_its_cancelled_dates():
    span = all_day_span(dt.date(2026, 3, 2), None, "Europe/Berlin")
    monthly = ["RRULE:FREQ=MONTHLY;COUNT=3"]
    skipped = [OccurrenceChange(dt.date(2026, 4, 2), None)]
    assert next_start(span, monthly, SPRING[0] + dt.timedelta(days=2), skipped) == (
        dt.date(2026, 5, 2)
    )


@pytest.mark.parametrize(
    "line",
    [
        "RRULE:FREQ=SOMETIMES",
        "RRULE:FREQ=WEEKLY;UNTIL=next-week",
        "EXDATE:yesterday",
        # RFC 5545 wants a positive INTERVAL; 0 would make expansion loop forever
        "RRULE:FREQ=WEEKLY;INTERVAL=0",
    ],
)
def test_lines_that_cannot_be_read_give_no_occurrences(line: str):
    assert occurrence_starts(MONDAY, [line], *SPRING) is None
    assert next_start(MONDAY, [line], berlin(1)) is None
