from __future__ import annotations

import datetime as dt

import pytest

from crmflow.domain.appointments import all_day_span, normalize_rrule, timed_span
from crmflow.domain.emails import normalize_email
from crmflow.errors import ValidationFailed


def test_timed_span_reads_naive_times_in_the_zone():
    span = timed_span(
        dt.datetime(2026, 1, 5, 9), dt.datetime(2026, 1, 5, 10), "America/New_York"
    )
    assert span.start_at == dt.datetime(2026, 1, 5, 14, tzinfo=dt.UTC)


def test_timed_span_across_dst_change():
    # Europe/Berlin switches to summer time on 2026-03-29 at 02:00 -> 03:00
    span = timed_span(
        dt.datetime(2026, 3, 29, 1), dt.datetime(2026, 3, 29, 4), "Europe/Berlin"
    )
    assert span.end_at - span.start_at == dt.timedelta(hours=2)


def test_all_day_span_has_exclusive_end():
    span = all_day_span(dt.date(2026, 5, 3), None, "Europe/Berlin")
    assert (span.start_date, span.end_date) == (
        dt.date(2026, 5, 3),
        dt.date(2026, 5, 4),
    )
    assert span.all_day


@pytest.mark.parametrize(
    "bad",
    [
        lambda: timed_span(
            dt.datetime(2026, 1, 1, 10), dt.datetime(2026, 1, 1, 10), "UTC"
        ),
        lambda: all_day_span(dt.date(2026, 1, 2), dt.date(2026, 1, 2), "UTC"),
        lambda: timed_span(
            dt.datetime(2026, 1, 1), dt.datetime(2026, 1, 2), "Nowhere/City"
        ),
    ],
)
def test_bad_spans(bad):
    with pytest.raises(ValidationFailed):
        bad()


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("FREQ=DAILY", "FREQ=DAILY"),
        ("rrule:freq=weekly;byday=mo", "FREQ=WEEKLY;BYDAY=MO"),
        ("FREQ=MONTHLY;UNTIL=20261231T000000Z", "FREQ=MONTHLY;UNTIL=20261231T000000Z"),
        ("", None),
        (None, None),
    ],
)
def test_rrule_normalization(rule, expected):
    assert normalize_rrule(rule) == expected


@pytest.mark.parametrize(
    "rule",
    [
        "FREQ=WEEKLY;COUNT=2;UNTIL=20260101",
        "BYDAY=MO",
        "FREQ=WEEKLY;FREQ=DAILY",
        "FREQ=DAILY\nEXDATE:1",
        "FREQ=DAILY;X-FOO=1",
        "FREQ=WEEKLY;INTERVAL=0",
        "FREQ=WEEKLY;INTERVAL=two",
        "FREQ=DAILY;COUNT=0",
    ],
)
def test_rrule_rejects(rule):
    with pytest.raises(ValidationFailed):
        normalize_rrule(rule)


def test_email_normalization():
    assert normalize_email(" Dana@Example.COM ") == "dana@example.com"
    assert normalize_email("it@corp.local") == "it@corp.local"
    for bad in ("no-at", "a@b", "a b@c.d", "x@y.z>"):
        with pytest.raises(ValidationFailed):
            normalize_email(bad)


def test_nonexistent_local_time_is_refused_not_moved():
    # 02:30 does not exist in Berlin on 2026-03-29 (02:00 -> 03:00)
    with pytest.raises(ValidationFailed, match="does not exist in Europe/Berlin"):
        timed_span(
            dt.datetime(2026, 3, 29, 2, 30),
            dt.datetime(2026, 3, 29, 4),
            "Europe/Berlin",
        )
    # an explicit offset is an instant and always accepted
    span = timed_span(
        dt.datetime(2026, 3, 29, 0, 30, tzinfo=dt.UTC),
        dt.datetime(2026, 3, 29, 2, tzinfo=dt.UTC),
        "Europe/Berlin",
    )
    assert span.start_at.hour == 0
