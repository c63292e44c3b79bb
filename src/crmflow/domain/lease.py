"""A sync run's hold on its account (a ``sync_lease_until`` column): one run
per account at a time.

A run takes the lease for :attr:`Lease.length`; once a third of it has
passed the run renews it at its next database commit, so a live run keeps
its account as long as nothing between two commits takes two thirds of the
lease. A renewal names the lease it renews (:attr:`Lease.held`): if that one
ran out and another run took the account meanwhile, the renewal finds
nothing to renew and the run must stop (it is fenced). Runs shorter than a
third of the lease never renew.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass
class Lease:
    """The lease a run holds: until when, and for how long each time."""

    #: when the lease this run holds ends (the column's value)
    held: dt.datetime
    length: dt.timedelta
    #: the value before the last renewal: the column still holds it if the
    #: transaction that renewed the lease was rolled back
    previous: dt.datetime | None = None

    @classmethod
    def taken(cls, now: dt.datetime, length: dt.timedelta) -> Lease:
        """The lease a run asks for at ``now``."""
        return cls(now + length, length)

    def due(self, now: dt.datetime) -> bool:
        """Whether it is time to renew (a third of the lease has passed)."""
        return now >= self.held - self.length * 2 / 3

    def renewal(self, now: dt.datetime) -> dt.datetime:
        """The end of the lease renewed at ``now``."""
        return now + self.length

    def renewed(self, until: dt.datetime) -> None:
        """Record a renewal to ``until`` (not yet committed)."""
        self.previous, self.held = self.held, until

    def values(self) -> tuple[dt.datetime, ...]:
        """The column values that mean this run's lease, for giving it back."""
        return (self.held,) if self.previous is None else (self.held, self.previous)
