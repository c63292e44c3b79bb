"""The ``CalendarProvider`` contract: tests every side of a sync pair must pass.

Subclass :class:`CalendarProviderContract` once per adapter and provide the
``provider`` fixture: a writable, empty calendar of that adapter (the memory
calendar now; Google and Graph against the sandbox, CalDAV against Radicale, the
CRM appointments side against SQLite/PostgreSQL later). Override
:meth:`~CalendarProviderContract.expire_cursors` when the backend can be made to
forget its cursors, and ``read_only_provider`` when it can hand out a read-only
calendar holding the events passed in. Tests of optional behaviour skip by
capability, as vdirsyncer's ``StorageTests`` do.

The file is not collected by itself (no ``test_`` prefix): import the class.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from crmflow.domain.appointments import all_day_span, timed_span
from crmflow.domain.calendar import (
    Attendee,
    CalendarEvent,
    CalendarProvider,
    Capability,
    EventStatus,
    Notify,
    RecurrenceException,
    RemoteEvent,
    ResponseStatus,
    Written,
)
from crmflow.providers.base import (
    CursorExpired,
    ItemAlreadyExists,
    ItemNotFound,
    PreconditionFailed,
    UnsupportedOperation,
)

_keys = iter(range(1, 10**9))


def new_key() -> str:
    """A fresh idempotency key (hex, as the engine makes them)."""
    return f"{next(_keys):040x}"


def sample(uid: str = "contract-1", title: str = "Contract test") -> CalendarEvent:
    return CalendarEvent(
        ical_uid=uid,
        title=title,
        span=timed_span(
            dt.datetime(2026, 4, 7, 10), dt.datetime(2026, 4, 7, 11), "Europe/Berlin"
        ),
    )


SERIES_START = dt.datetime(2026, 4, 6, 7, tzinfo=dt.UTC)

#: events whose every synced field must survive a round trip
ROUND_TRIP = {
    "timed": sample(),
    "details": replace(
        sample("contract-details"),
        description="Agenda:\n1. numbers\n2. next steps",
        location="Room 4, Main Street 1",
        status=EventStatus.TENTATIVE,
        attendees=(
            Attendee("ann@example.com", "Ann", ResponseStatus.ACCEPTED),
            Attendee("bob@example.com", None, ResponseStatus.NEEDS_ACTION),
        ),
    ),
    "all-day": replace(
        sample("contract-all-day"),
        span=all_day_span(dt.date(2026, 5, 3), dt.date(2026, 5, 5), "America/New_York"),
    ),
    "series": replace(
        sample("contract-series"),
        span=timed_span(
            dt.datetime(2026, 4, 6, 9), dt.datetime(2026, 4, 6, 10), "Europe/Berlin"
        ),
        recurrence=("RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=6", "EXDATE:20260420T070000Z"),
        exceptions=(
            RecurrenceException(
                SERIES_START + dt.timedelta(days=7),
                title="Moved",
                span=timed_span(
                    dt.datetime(2026, 4, 14, 9),
                    dt.datetime(2026, 4, 14, 10),
                    "Europe/Berlin",
                ),
            ),
            RecurrenceException(
                SERIES_START + dt.timedelta(days=21), EventStatus.CANCELLED
            ),
        ),
    ),
    "odd uid": sample("ünï/cødé?&#%\nuid"),
}


class CalendarProviderContract:
    """Tests every ``CalendarProvider`` implementation must pass."""

    @pytest.fixture
    def provider(self) -> CalendarProvider:
        raise NotImplementedError("subclasses provide a writable, empty calendar")

    @pytest.fixture
    def read_only_provider(self) -> CalendarProvider | None:
        """A read-only calendar holding :func:`sample` (None: cannot be made)."""
        return None

    async def expire_cursors(self, provider: CalendarProvider) -> bool:
        """Make the backend forget every cursor; False when it cannot."""
        return False

    # ---------------------------------------------------------- helpers

    async def create(self, provider: CalendarProvider, event: CalendarEvent) -> Written:
        return await provider.create(
            event, idempotency_key=new_key(), notify=Notify.NONE
        )

    async def fetch_one(
        self, provider: CalendarProvider, remote_id: str
    ) -> RemoteEvent:
        [item] = await provider.get_many([remote_id])
        return item

    def needs(self, provider: CalendarProvider, capability: Capability) -> None:
        if capability not in provider.capabilities:
            pytest.skip(f"the provider lacks {capability}")

    # ---------------------------------------------------------- listing

    async def test_capabilities_are_a_frozenset(self, provider):
        assert isinstance(provider.capabilities, frozenset)
        assert all(isinstance(c, Capability) for c in provider.capabilities)
        assert Capability.READ_ONLY not in provider.capabilities
        limit = provider.get_many_limit
        assert limit is None or limit >= 1

    async def test_empty_calendar_lists_nothing(self, provider):
        listing = await provider.list()
        assert dict(listing.items) == {}
        assert (listing.cursor is not None) == (
            Capability.INCREMENTAL in provider.capabilities
        )

    # ---------------------------------------------------------- create

    @pytest.mark.parametrize("name", sorted(ROUND_TRIP))
    async def test_create_round_trips_every_synced_field(self, provider, name):
        event = ROUND_TRIP[name]
        written = await self.create(provider, event)
        item = await self.fetch_one(provider, written.remote_id)
        assert item.remote_id == written.remote_id
        assert item.event.ical_uid == event.ical_uid
        assert item.event.content_hash() == event.content_hash()
        assert dict((await provider.list()).items) == {written.remote_id: item.version}

    async def test_create_returns_the_version(self, provider):
        written = await self.create(provider, sample())
        assert written.adopted is False
        listed = (await provider.list()).items[written.remote_id]
        if Capability.RETURNS_VERSION_ON_WRITE in provider.capabilities:
            assert written.version == listed
        else:
            assert written.version in (None, listed)

    async def test_create_is_idempotent_per_key(self, provider):
        key = new_key()
        first = await provider.create(sample(), idempotency_key=key, notify=Notify.NONE)
        try:
            again = await provider.create(
                sample(), idempotency_key=key, notify=Notify.NONE
            )
        except ItemAlreadyExists:
            pass
        else:
            assert (again.remote_id, again.adopted) == (first.remote_id, True)
        assert list((await provider.list()).items) == [first.remote_id]

    async def test_uids_differing_in_case_stay_distinct(self, provider):
        upper = await self.create(provider, sample("CaseUID", "upper"))
        lower = await self.create(provider, sample("caseuid", "lower"))
        assert upper.remote_id != lower.remote_id
        items = await provider.get_many([upper.remote_id, lower.remote_id])
        assert sorted(i.event.title for i in items) == ["lower", "upper"]

    # ---------------------------------------------------------- get_many

    async def test_get_many_fetches_in_bulk_and_skips_unknown_ids(self, provider):
        ids = [
            (await self.create(provider, sample(f"bulk-{n}"))).remote_id
            for n in range(3)
        ]
        wanted = [*ids, "no-such-item"]
        limit = provider.get_many_limit or len(wanted)
        items = []
        for start in range(0, len(wanted), limit):
            items.extend(await provider.get_many(wanted[start : start + limit]))
        assert sorted(i.remote_id for i in items) == sorted(ids)
        assert sorted(i.event.ical_uid for i in items) == ["bulk-0", "bulk-1", "bulk-2"]

    # ---------------------------------------------------------- update

    async def test_update_with_the_current_version(self, provider):
        written = await self.create(provider, sample())
        current = await self.fetch_one(provider, written.remote_id)
        version = await provider.update(
            written.remote_id,
            sample(title="Renamed"),
            if_match=current.version,
            notify=Notify.NONE,
        )
        item = await self.fetch_one(provider, written.remote_id)
        assert item.event.title == "Renamed"
        assert item.version != current.version
        if Capability.RETURNS_VERSION_ON_WRITE in provider.capabilities:
            assert version == (await provider.list()).items[written.remote_id]

    async def test_update_with_a_stale_version_changes_nothing(self, provider):
        written = await self.create(provider, sample())
        stale = (await self.fetch_one(provider, written.remote_id)).version
        await provider.update(
            written.remote_id, sample(title="First"), if_match=stale, notify=Notify.NONE
        )
        with pytest.raises(PreconditionFailed):
            await provider.update(
                written.remote_id,
                sample(title="Second"),
                if_match=stale,
                notify=Notify.NONE,
            )
        assert (
            await self.fetch_one(provider, written.remote_id)
        ).event.title == "First"

    async def test_update_of_a_missing_item(self, provider):
        written = await self.create(provider, sample())
        version = (await self.fetch_one(provider, written.remote_id)).version
        await provider.delete(written.remote_id, if_match=version, notify=Notify.NONE)
        with pytest.raises(ItemNotFound):
            await provider.update(
                written.remote_id, sample(), if_match=version, notify=Notify.NONE
            )

    # ---------------------------------------------------------- delete

    async def test_delete_with_the_current_version(self, provider):
        keep = await self.create(provider, sample("keep"))
        gone = await self.create(provider, sample("gone"))
        version = (await self.fetch_one(provider, gone.remote_id)).version
        await provider.delete(gone.remote_id, if_match=version, notify=Notify.NONE)
        assert list((await provider.list()).items) == [keep.remote_id]
        assert await provider.get_many([gone.remote_id]) == []

    async def test_delete_with_a_stale_version_keeps_the_item(self, provider):
        written = await self.create(provider, sample())
        stale = (await self.fetch_one(provider, written.remote_id)).version
        await provider.update(
            written.remote_id,
            sample(title="Changed"),
            if_match=stale,
            notify=Notify.NONE,
        )
        with pytest.raises(PreconditionFailed):
            await provider.delete(written.remote_id, if_match=stale, notify=Notify.NONE)
        assert written.remote_id in (await provider.list()).items

    async def test_delete_of_a_missing_item(self, provider):
        written = await self.create(provider, sample())
        version = (await self.fetch_one(provider, written.remote_id)).version
        await provider.delete(written.remote_id, if_match=version, notify=Notify.NONE)
        with pytest.raises(ItemNotFound):
            await provider.delete(
                written.remote_id, if_match=version, notify=Notify.NONE
            )

    # ---------------------------------------------------------- change feed

    async def test_change_feed_reports_creates_updates_and_deletes(self, provider):
        self.needs(provider, Capability.INCREMENTAL)
        kept = await self.create(provider, sample("kept"))
        changed = await self.create(provider, sample("changed"))
        deleted = await self.create(provider, sample("deleted"))
        cursor = (await provider.list()).cursor
        assert cursor is not None

        changed_version = (await self.fetch_one(provider, changed.remote_id)).version
        await provider.update(
            changed.remote_id,
            sample("changed", "New"),
            if_match=changed_version,
            notify=Notify.NONE,
        )
        deleted_version = (await self.fetch_one(provider, deleted.remote_id)).version
        await provider.delete(
            deleted.remote_id, if_match=deleted_version, notify=Notify.NONE
        )
        added = await self.create(provider, sample("added"))

        changes = await provider.list_changes(cursor)
        listing = (await provider.list()).items
        assert dict(changes.changed) == {
            changed.remote_id: listing[changed.remote_id],
            added.remote_id: listing[added.remote_id],
        }
        assert deleted.remote_id in changes.deleted
        assert kept.remote_id not in changes.changed
        # the same cursor again: the same answer; the next cursor: nothing new
        assert (await provider.list_changes(cursor)).changed == changes.changed
        later = await provider.list_changes(changes.cursor)
        assert dict(later.changed) == {}

    async def test_unknown_cursor_is_expired(self, provider):
        self.needs(provider, Capability.INCREMENTAL)
        with pytest.raises(CursorExpired):
            await provider.list_changes("not-a-cursor-of-this-calendar")

    async def test_expired_cursor(self, provider):
        self.needs(provider, Capability.INCREMENTAL)
        cursor = (await provider.list()).cursor
        assert cursor is not None
        if not await self.expire_cursors(provider):
            pytest.skip("the backend cannot be made to forget cursors")
        with pytest.raises(CursorExpired):
            await provider.list_changes(cursor)

    async def test_no_change_feed_without_the_capability(self, provider):
        if Capability.INCREMENTAL in provider.capabilities:
            pytest.skip("the provider has a change feed")
        with pytest.raises(UnsupportedOperation):
            await provider.list_changes("anything")

    # ---------------------------------------------------------- read-only

    async def test_read_only_calendar_refuses_every_write(self, read_only_provider):
        if read_only_provider is None:
            pytest.skip("no read-only calendar for this backend")
        provider: CalendarProvider = read_only_provider
        assert Capability.READ_ONLY in provider.capabilities
        [(remote_id, version)] = (await provider.list()).items.items()
        with pytest.raises(UnsupportedOperation):
            await self.create(provider, sample("new"))
        with pytest.raises(UnsupportedOperation):
            await provider.update(
                remote_id, sample(title="No"), if_match=version, notify=Notify.NONE
            )
        with pytest.raises(UnsupportedOperation):
            await provider.delete(remote_id, if_match=version, notify=Notify.NONE)
        [item] = await provider.get_many([remote_id])
        assert item.event == sample()


__all__ = ["ROUND_TRIP", "CalendarProviderContract", "new_key", "sample"]
