"""When a calendar or mailbox is synced next: the polling schedule's rules.

Every connected calendar and mailbox is synced every ``interval`` (a polling
fallback even where push notifications exist), spread by ``jitter`` so that
accounts connected together do not sync together forever. A failed run is
retried sooner, but never in a hot loop: the pause starts at
:data:`MIN_RETRY` and doubles with each failure in a row up to the interval;
after :data:`MAX_FAILURES` failures in a row the account counts as failing
(shown to the user and in metrics) and keeps being retried at the interval,
so it recovers by itself once the cause is fixed.

Pure functions: the caller passes the current instant and a random number.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

#: the shortest pause before retrying a failed run
MIN_RETRY = dt.timedelta(seconds=60)
#: failures in a row after which an account counts as failing
MAX_FAILURES = 5


@dataclass(frozen=True, slots=True)
class Schedule:
    """The polling schedule of one deployment."""

    #: how often an account is synced when nothing else asks for it
    interval: dt.timedelta
    #: spread, as a fraction of the interval (0.1: plus or minus 10 %)
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.interval <= dt.timedelta(0):
            raise ValueError("the sync interval must be positive")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter is a fraction in [0, 1)")

    def _spread(self, pause: dt.timedelta, rand: float) -> dt.timedelta:
        # rand in [0, 1) -> a factor in [1 - jitter, 1 + jitter)
        return pause * (1 + self.jitter * (2 * rand - 1))

    def after_success(self, now: dt.datetime, rand: float) -> dt.datetime:
        """When to sync next after a run that worked."""
        return now + self._spread(self.interval, rand)

    def after_failure(
        self, now: dt.datetime, failures: int, rand: float
    ) -> dt.datetime:
        """When to retry after the ``failures``-th failed run in a row (>= 1)."""
        steps = max(0, min(failures, 30) - 1)  # 2**30 minutes is plenty
        pause = min(self.interval, MIN_RETRY * (2**steps))
        return now + max(MIN_RETRY, self._spread(pause, rand))


def is_failing(failures: int) -> bool:
    """Whether an account has failed often enough in a row to be shown as failing."""
    return failures >= MAX_FAILURES
