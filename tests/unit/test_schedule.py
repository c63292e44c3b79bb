"""The polling schedule's rules: interval with jitter, back-off after failures."""

from __future__ import annotations

import datetime as dt

import pytest

from crmflow.domain.schedule import MAX_FAILURES, MIN_RETRY, Schedule, is_failing

NOW = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)
FIVE = dt.timedelta(minutes=5)


@pytest.mark.parametrize(("rand", "factor"), [(0.0, 0.9), (0.5, 1.0), (0.999999, 1.1)])
def test_success_waits_the_interval_spread_by_the_jitter(
    rand: float, factor: float
) -> None:
    after = Schedule(FIVE, jitter=0.1).after_success(NOW, rand) - NOW
    assert after.total_seconds() == pytest.approx(
        FIVE.total_seconds() * factor, abs=0.01
    )


def test_failures_back_off_doubling_up_to_the_interval_never_below_a_minute() -> None:
    schedule = Schedule(dt.timedelta(minutes=10), jitter=0.0)
    pauses = [schedule.after_failure(NOW, n, 0.5) - NOW for n in range(1, 8)]
    minutes = [p.total_seconds() / 60 for p in pauses]
    assert minutes == [1, 2, 4, 8, 10, 10, 10]
    # jitter never takes a retry below the minimum
    low = Schedule(dt.timedelta(minutes=10), jitter=0.5).after_failure(NOW, 1, 0.0)
    assert low - NOW == MIN_RETRY
    # absurd failure counts do not overflow
    assert schedule.after_failure(NOW, 10**6, 0.5) - NOW == dt.timedelta(minutes=10)


def test_an_interval_below_the_minimum_retry_still_retries_after_a_minute() -> None:
    schedule = Schedule(dt.timedelta(seconds=20), jitter=0.0)
    assert schedule.after_failure(NOW, 3, 0.5) - NOW == MIN_RETRY
    assert schedule.after_success(NOW, 0.5) - NOW == dt.timedelta(seconds=20)


def test_failing_after_max_failures() -> None:
    assert not is_failing(MAX_FAILURES - 1)
    assert is_failing(MAX_FAILURES)


@pytest.mark.parametrize(
    ("interval", "jitter"), [(dt.timedelta(0), 0.1), (FIVE, -0.1), (FIVE, 1.0)]
)
def test_bad_schedules_are_refused(interval: dt.timedelta, jitter: float) -> None:
    with pytest.raises(ValueError, match=r"interval|jitter"):
        Schedule(interval, jitter)
