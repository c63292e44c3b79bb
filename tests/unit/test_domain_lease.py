"""When a run renews its lease (``crmflow.domain.lease``)."""

from __future__ import annotations

import datetime as dt

from crmflow.domain.lease import Lease

T0 = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
LENGTH = dt.timedelta(minutes=15)


def test_a_lease_is_due_for_renewal_once_a_third_has_passed() -> None:
    lease = Lease.taken(T0, LENGTH)
    assert lease.held == T0 + LENGTH
    assert not lease.due(T0)
    assert not lease.due(T0 + dt.timedelta(minutes=4, seconds=59))
    assert lease.due(T0 + dt.timedelta(minutes=5))
    # also long after it ran out: the renewal then finds out whether it is
    # still this run's
    assert lease.due(T0 + dt.timedelta(hours=1))


def test_a_renewed_lease_runs_a_full_length_from_the_renewal() -> None:
    lease = Lease.taken(T0, LENGTH)
    at = T0 + dt.timedelta(minutes=6)
    lease.held = lease.renewal(at)
    assert lease.held == at + LENGTH
    assert not lease.due(at + dt.timedelta(minutes=4))
    assert lease.due(at + dt.timedelta(minutes=5))


def test_a_renewal_not_yet_committed_still_gives_back_the_old_lease() -> None:
    lease = Lease.taken(T0, LENGTH)
    first = lease.held
    lease.renewed(lease.renewal(T0 + dt.timedelta(minutes=6)))
    # if the renewing transaction rolled back, the column still holds `first`
    assert lease.values() == (T0 + dt.timedelta(minutes=21), first)
