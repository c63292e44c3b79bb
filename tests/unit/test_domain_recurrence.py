"""Series expansion (``crmflow.domain.recurrence``): wall clock across
daylight-saving changes, EXDATE/RDATE, date and floating UNTIL, all-day series,
the next start after an instant, and lines that cannot be read."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from zoneinfo import ZoneInfo

import pytest
from icalendar import vRecur

from crmflow.domain.appointments import TimeSpan, all_day_span, timed_span
from crmflow.domain.crm import OccurrenceChange
from crmflow.domain.recurrence import (
    Start,
    never_matches,
    occurrence_starts,
    occurrences,
    series_end,
)

BERLIN = ZoneInfo("Europe/Berlin")
UTC = dt.UTC


def berlin(day: int, month: int = 3, hour: int = 9) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, tzinfo=BERLIN)


def next_start(
    span: TimeSpan,
    lines: list[str],
    instant: dt.datetime,
    changes: Sequence[OccurrenceChange] = (),
) -> Start | None:
    """The first start after ``instant`` (a date for an all-day series), as
    the appointments page works it out from :func:`occurrences`."""
    found = occurrences(span, lines, instant, None, changes, limit=2)
    following = next((o for o in found or () if o.start_at > instant), None)
    if following is None:
        return None
    return following.start_date if following.all_day else following.start_at


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


def _starts(found):
    assert found is not None
    return [o.start_at for o in found]


def test_occurrences_in_a_range_include_the_one_under_way_and_keep_the_wall_clock():
    weekly = ["RRULE:FREQ=WEEKLY"]  # 09:00-10:00 Berlin every Monday from 16 March
    # from Monday 23 March 09:30 (that meeting is under way) to 6 April 09:00
    found = occurrences(MONDAY, weekly, berlin(23, hour=9) + dt.timedelta(minutes=30),
                        berlin(6, 4), limit=10)  # fmt: skip
    assert _starts(found) == [berlin(23).astimezone(UTC), berlin(30).astimezone(UTC)]
    assert found is not None
    assert [o.end_at - o.start_at for o in found] == [dt.timedelta(hours=1)] * 2
    assert found[1].start_at.hour == 7  # 09:00 in summer time
    assert {o.timezone for o in found} == {"Europe/Berlin"}
    # the range's end is exclusive; no end gives the next ones, up to the limit
    assert _starts(occurrences(MONDAY, weekly, berlin(6, 4), None, limit=2)) == [
        berlin(6, 4).astimezone(UTC),
        berlin(13, 4).astimezone(UTC),
    ]
    # before the series began, and after a COUNT ran out: none
    assert occurrences(MONDAY, weekly, berlin(1), berlin(16), limit=10) == []
    assert occurrences(MONDAY, ["RRULE:FREQ=WEEKLY;COUNT=2"], berlin(24), None,
                       limit=10) == []  # fmt: skip


def test_occurrences_leave_out_cancelled_and_place_moved_ones():
    weekly = ["RRULE:FREQ=WEEKLY;COUNT=4"]  # 16, 23, 30 March, 6 April
    changes = [
        OccurrenceChange(berlin(23), None),  # cancelled
        # the 30th moved out of the range, the 6th into it, two hours long
        OccurrenceChange(berlin(30), berlin(8, 4)),
        OccurrenceChange(berlin(6, 4), berlin(25), berlin(25, hour=11)),
    ]
    found = occurrences(MONDAY, weekly, berlin(17), berlin(1, 4), changes, limit=10)
    assert found is not None
    assert [(o.start_at, o.end_at) for o in found] == [
        (berlin(25).astimezone(UTC), berlin(25, hour=11).astimezone(UTC))
    ]
    # the one moved out is found where it went, as long as the series' ones
    later = occurrences(MONDAY, weekly, berlin(7, 4), None, changes, limit=10)
    assert later is not None
    assert [(o.start_at, o.end_at) for o in later] == [
        (berlin(8, 4).astimezone(UTC), berlin(8, 4, hour=10).astimezone(UTC))
    ]


def test_all_day_occurrences_are_whole_days_in_the_series_zone():
    span = all_day_span(dt.date(2026, 3, 2), None, "Europe/Berlin")
    monthly = ["RRULE:FREQ=MONTHLY;COUNT=3"]  # 2 March, 2 April, 2 May
    midnight = dt.datetime(2026, 4, 2, tzinfo=BERLIN)
    # a range that starts late on 2 April Berlin time still meets that day
    found = occurrences(span, monthly, midnight + dt.timedelta(hours=23), None,
                        limit=10)  # fmt: skip
    assert found is not None
    assert [(o.start_date, o.end_date) for o in found] == [
        (dt.date(2026, 4, 2), dt.date(2026, 4, 3)),
        (dt.date(2026, 5, 2), dt.date(2026, 5, 3)),
    ]
    assert found[0].all_day
    assert found[0].start_at == midnight.astimezone(UTC)
    # one moved by a week, still one day long
    moved = [OccurrenceChange(dt.date(2026, 4, 2), dt.date(2026, 4, 9))]
    found = occurrences(span, monthly, midnight, midnight + dt.timedelta(days=10),
                        moved, limit=10)  # fmt: skip
    assert found is not None
    assert [(o.start_date, o.end_date) for o in found] == [
        (dt.date(2026, 4, 9), dt.date(2026, 4, 10))
    ]


def test_series_end_is_never_early_and_none_without_a_bound():
    weekly = "RRULE:FREQ=WEEKLY"
    assert series_end(MONDAY, []) == MONDAY.end_at  # not a series
    # by UNTIL: late by up to a day and an occurrence's length, never early
    until = f"{weekly};UNTIL=20260401T000000Z"
    by_until = series_end(MONDAY, [until])
    assert by_until is not None
    assert berlin(30, hour=10) <= by_until <= berlin(2, 4, hour=10)
    # an RDATE after the rule's end, or an occurrence moved past it
    rdate = series_end(MONDAY, [until, "RDATE;TZID=Europe/Berlin:20260501T090000"])
    assert rdate is not None
    assert berlin(1, 5, hour=10) <= rdate <= berlin(2, 5, hour=11)
    moved = [OccurrenceChange(berlin(23), berlin(4, 5), berlin(4, 5, hour=12))]
    assert series_end(MONDAY, [until], moved) == berlin(4, 5, hour=12)
    # no end, a COUNT (only an expansion could tell), a line that cannot be
    # read, or an UNTIL past what a date can hold: "maybe still going"
    assert series_end(MONDAY, [weekly]) is None
    assert series_end(MONDAY, [f"{weekly};COUNT=4"]) is None
    assert series_end(MONDAY, ["RRULE:FREQ=SOMETIMES"]) is None
    assert series_end(MONDAY, [f"{weekly};UNTIL=99991231"]) is None
    assert occurrences(MONDAY, ["RRULE:FREQ=SOMETIMES"], berlin(1), None,
                       limit=1) is None  # fmt: skip


@pytest.mark.parametrize(
    "rule", ["FREQ=DAILY", "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR", "FREQ=DAILY;COUNT=70"]
)
def test_all_day_series_on_consecutive_days_are_listed_for_a_week(rule: str):
    span = all_day_span(dt.date(2026, 1, 1), None, "Europe/Berlin")
    week = (dt.datetime(2026, 3, 2, tzinfo=UTC), dt.datetime(2026, 3, 9, tzinfo=UTC))
    found = occurrences(span, [f"RRULE:{rule}"], *week, limit=100)
    assert found is not None
    days = [o.start_date for o in found]
    # 1 March ends at midnight Berlin, 23:00 UTC on the 1st: it overlaps
    expected = [dt.date(2026, 3, d) for d in range(2, 10)]
    if "BYDAY" in rule:
        expected = [d for d in expected if d.weekday() < 5]
    assert days == expected
    # and from a start on, the next ones up to the limit
    found = occurrences(span, [f"RRULE:{rule}"], week[0], None, limit=3)
    assert found is not None
    assert len(found) == 3


def test_a_change_of_an_occurrence_the_rule_does_not_have_is_ignored():
    # left from before the series moved from Monday to Tuesday
    weekly = ["RRULE:FREQ=WEEKLY;COUNT=4"]
    tuesday = timed_span(berlin(17), berlin(17, hour=10), "Europe/Berlin")
    stale = [OccurrenceChange(berlin(23), berlin(26))]
    found = occurrences(tuesday, weekly, berlin(16), berlin(1, 4), stale, limit=10)
    assert _starts(found) == [berlin(d).astimezone(UTC) for d in (17, 24, 31)]


def test_series_end_of_a_huge_series_is_bounded_without_expanding_it():
    # a rule with UNTIL ends by then, however many occurrences it has
    until = "RRULE:FREQ=SECONDLY;UNTIL=20300101T000000Z"
    end = series_end(MONDAY, [until])
    assert end is not None
    assert (
        dt.datetime(2030, 1, 1, tzinfo=UTC)
        <= end
        <= dt.datetime(2030, 1, 3, tzinfo=UTC)
    )
    # a COUNT is never counted, however small or large
    for count in (2, 1000000):
        assert series_end(MONDAY, [f"RRULE:FREQ=MONTHLY;COUNT={count}"]) is None


def test_a_series_too_dense_to_walk_to_the_range_counts_as_unreadable():
    """Expanding walks the rule from the first start: an endless minutely
    series begun a year before the range would take many seconds, so it is
    not expanded (listed by its first occurrence, like an unreadable one);
    a daily one of the same age is."""
    year_ago = timed_span(berlin(16, 3), berlin(16, 3, hour=10), "Europe/Berlin")
    later = (berlin(16, 3) + dt.timedelta(days=366), None)
    assert occurrences(year_ago, ["RRULE:FREQ=MINUTELY"], *later, limit=2) is None
    daily = occurrences(year_ago, ["RRULE:FREQ=DAILY"], *later, limit=2)
    assert daily is not None
    assert len(daily) == 2


def test_dense_rules_far_dates_and_rules_that_never_match_end_quickly():
    # every second of every day, begun the day before: refused, not walked
    every_second = (
        "RRULE:FREQ=DAILY;BYHOUR=" + ",".join(map(str, range(24)))
        + ";BYMINUTE=" + ",".join(map(str, range(60)))
        + ";BYSECOND=" + ",".join(map(str, range(60)))
    )  # fmt: skip
    assert occurrences(MONDAY, [every_second], berlin(17), None, limit=8) is None
    # a minutely series that ends tomorrow is walked only to its end
    soon = "RRULE:FREQ=MINUTELY;UNTIL=20260317T090000Z"
    found = occurrences(MONDAY, [soon], berlin(16, hour=12), None, limit=3)
    # hour-long meetings: those begun in the last hour are under way at 12:00
    assert _starts(found) == [
        berlin(16, hour=11) + dt.timedelta(minutes=m) for m in (1, 2, 3)
    ]
    # 30 February never comes: only the first start is an occurrence, and
    # dateutil is not asked (it would look until the year 9999)
    for never in (
        "RRULE:FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30",
        "RRULE:FREQ=HOURLY;BYMONTH=4,6;BYMONTHDAY=31;COUNT=5",
    ):
        assert occurrences(MONDAY, [never], berlin(17), None, limit=8) == []
        assert _starts(occurrences(MONDAY, [never], berlin(1), None, limit=8)) == [
            berlin(16).astimezone(UTC)
        ]
        assert series_end(MONDAY, [never]) == MONDAY.end_at
    # dates at the end of the calendar give nothing rather than an error
    last = dt.datetime(9999, 12, 30, tzinfo=UTC)
    assert occurrences(MONDAY, ["RRULE:FREQ=WEEKLY"], last, None, limit=8) is None


@pytest.mark.parametrize(
    ("parts", "never"),
    [
        ({"FREQ": ["DAILY"], "BYMONTH": [2], "BYMONTHDAY": [30]}, True),
        ({"FREQ": ["DAILY"], "BYMONTH": [2], "BYMONTHDAY": [29]}, False),  # leap
        ({"FREQ": ["MONTHLY"], "BYMONTH": [4, 5], "BYMONTHDAY": [31]}, False),
        ({"FREQ": ["MONTHLY"], "BYMONTH": [4, 6], "BYMONTHDAY": [31, -31]}, True),
        ({"FREQ": ["MONTHLY"], "BYMONTHDAY": [32]}, True),
        ({"FREQ": ["MONTHLY"], "BYMONTHDAY": [-29], "BYMONTH": [2]}, False),
        ({"FREQ": ["WEEKLY"]}, False),
    ],
)
def test_a_rule_whose_month_days_no_month_has_never_matches(parts, never):
    assert never_matches(vRecur(parts)) is never
