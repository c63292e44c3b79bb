"""``MemoryCalendar``: the ``CalendarProvider`` port in memory, with fault knobs.

It behaves like a well-behaved provider (conditional writes, a change feed,
idempotent creates) and can be told to misbehave the way real ones do:

============================== ====================================================
knob                           models
============================== ====================================================
``flaky_versions``             a server that hands out a new ETag on every read
``versions_on_write=False``    a CalDAV server without an ETag on PUT (case 15)
``read_only``                  a calendar without write access (case 13)
``fail_writes``                writes failing for chosen remote ids or UIDs (case 14)
``fail_next(error)``           429 / 503 / anything on the next calls
``lose_write_replies``         a write that succeeds but whose reply is lost
``before_next_write(hook)``    a concurrent edit between read and write (412)
``expire_cursors()``           Google 410 ``fullSyncRequired`` (case 22)
``hidden``                     an item the listing does not show yet (lag)
``duplicate_create``           adopt (Graph, CalDAV) or 409 (Google) on a repeat;
                               a create with a UID in use is always refused
``get_many_limit``             a batch limit (Graph ``$batch``: 20)
============================== ====================================================

Every port call is recorded in :attr:`MemoryCalendar.calls` before it runs
(failing ones too), so tests can assert "no writes" or "one bulk fetch". The
out-of-band methods (:meth:`put`, :meth:`edit`, :meth:`touch`, :meth:`move`,
:meth:`remove`) are what a person does in the provider's own UI: they are not
recorded and never fail.
"""

from __future__ import annotations

import builtins
import datetime as dt
import enum
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from crmflow.domain.calendar import (
    CalendarEvent,
    CalendarProvider,
    Capability,
    Changes,
    Listing,
    Notify,
    RemoteEvent,
    Written,
)
from crmflow.providers.base import (
    CursorExpired,
    ItemAlreadyExists,
    ItemNotFound,
    PreconditionFailed,
    ProviderError,
    TransientProviderError,
    UnsupportedOperation,
)


class DuplicateCreate(enum.StrEnum):
    """What a create does when its idempotency key was used for an existing item."""

    #: return that item with ``adopted=True`` (Graph lookup, CalDAV 412 -> read)
    ADOPT = "adopt"
    #: raise ``ItemAlreadyExists`` (a Google 409 the adapter cannot read back)
    RAISE = "raise"


class Method(enum.StrEnum):
    """The port methods, as recorded in :attr:`MemoryCalendar.calls`."""

    LIST = "list"
    LIST_CHANGES = "list_changes"
    GET_MANY = "get_many"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


#: the methods that change the calendar
WRITES = frozenset({Method.CREATE, Method.UPDATE, Method.DELETE})


@dataclass(frozen=True, slots=True)
class Call:
    """One recorded port call."""

    method: Method
    remote_ids: tuple[str, ...] = ()
    if_match: str | None = None
    idempotency_key: str | None = None
    notify: Notify | None = None
    #: the ``ical_uid`` of the event passed to create/update
    ical_uid: str | None = None


@dataclass(frozen=True, slots=True)
class Stored:
    """One item as the memory calendar keeps it."""

    event: CalendarEvent
    version: str
    updated_at: dt.datetime
    #: the idempotency key it was created with (None: made out of band)
    key: str | None = None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _default_id(event: CalendarEvent, serial: int) -> str:
    return f"mem-{serial}"


class MemoryCalendar(CalendarProvider):
    """A calendar held in a dict. For tests and the demo; nothing is persisted.

    Args:
        read_only: refuse writes (``UnsupportedOperation``).
        incremental: offer ``list_changes``.
        versions_on_write: ``create``/``update`` return the new version.
        flaky_versions: every read hands out (and keeps) a new version.
        duplicate_create: adopt or raise on a repeated idempotency key.
        get_many_limit: the most ids per ``get_many``.
        clock: the source of ``updated_at`` (share one between two calendars
            to make ``latest_wins`` deterministic).
        id_factory: makes remote ids from the event and a serial number.
    """

    def __init__(
        self,
        *,
        read_only: bool = False,
        incremental: bool = True,
        versions_on_write: bool = True,
        flaky_versions: bool = False,
        duplicate_create: DuplicateCreate = DuplicateCreate.ADOPT,
        get_many_limit: int | None = None,
        clock: Callable[[], dt.datetime] = _now,
        id_factory: Callable[[CalendarEvent, int], str] = _default_id,
    ) -> None:
        self.read_only = read_only
        self.incremental = incremental
        self.versions_on_write = versions_on_write
        self.flaky_versions = flaky_versions
        self.duplicate_create = duplicate_create
        self.limit = get_many_limit
        self.clock = clock
        self.id_factory = id_factory
        #: remote id -> item
        self.items: dict[str, Stored] = {}
        #: every port call, in order
        self.calls: builtins.list[Call] = []
        #: remote ids or UIDs whose writes fail with ``TransientProviderError``
        self.fail_writes: set[str] = set()
        #: ids left out of listings and change feeds until :meth:`reveal`
        self.hidden: set[str] = set()
        #: the next this-many writes are applied, then raise (reply lost)
        self.lose_write_replies = 0
        self._faults: builtins.list[ProviderError] = []
        self._hooks: builtins.list[Callable[[str | None], None]] = []
        self._serial = itertools.count(1)
        self._versions = itertools.count(1)
        #: (sequence number, remote id) per change, for the change feed
        self._feed: builtins.list[tuple[int, str]] = []
        self._seq = 0
        self._epoch = 0

    # ---------------------------------------------------------- fault knobs

    def fail_next(self, error: ProviderError, times: int = 1) -> None:
        """Raise ``error`` from the next ``times`` port calls, whatever they are."""
        self._faults.extend([error] * times)

    def before_next_write(self, hook: Callable[[str | None], None]) -> None:
        """Run ``hook(remote_id)`` once, just before the next write is checked
        (``None`` for a create): e.g. an out-of-band :meth:`edit` makes the
        write's ``if_match`` stale."""
        self._hooks.append(hook)

    def expire_cursors(self) -> None:
        """Forget every cursor handed out so far (Google 410 ``fullSyncRequired``)."""
        self._epoch += 1

    def reveal(self, remote_id: str) -> None:
        """Stop hiding ``remote_id``; the change feed reports it from now on."""
        self.hidden.discard(remote_id)
        self._changed(remote_id)

    def clear_faults(self) -> None:
        """Drop every pending fault and hook; show hidden items."""
        self._faults.clear()
        self._hooks.clear()
        self.fail_writes.clear()
        self.lose_write_replies = 0
        for remote_id in sorted(self.hidden):
            self.reveal(remote_id)

    # ---------------------------------------------------------- out of band

    def put(self, event: CalendarEvent, remote_id: str | None = None) -> str:
        """Add an item as a person would; returns its remote id."""
        remote_id = remote_id or self.id_factory(event, next(self._serial))
        if remote_id in self.items:
            raise ValueError(f"{remote_id!r} exists")
        self._store(remote_id, event, None)
        return remote_id

    def edit(self, remote_id: str, event: CalendarEvent) -> None:
        """Change an item's content as a person would (new version)."""
        self._store(remote_id, event, self.items[remote_id].key)

    def touch(self, remote_id: str) -> None:
        """Give an item a new version without changing its content or its
        ``updated_at`` (a server rewriting its ETag)."""
        stored = self.items[remote_id]
        self._store(remote_id, stored.event, stored.key, stored.updated_at)

    def move(self, remote_id: str, new_id: str) -> None:
        """Give an item a new remote id, same version and content (Graph id
        change after a folder move)."""
        self.items[new_id] = self.items.pop(remote_id)
        self._changed(remote_id)
        self._changed(new_id)

    def remove(self, remote_id: str) -> None:
        """Delete an item as a person would."""
        del self.items[remote_id]
        self._changed(remote_id)

    # ---------------------------------------------------------- inspection

    def events(self) -> dict[str, CalendarEvent]:
        """The events by ``ical_uid`` (use :meth:`uids` to see duplicates)."""
        return {stored.event.ical_uid: stored.event for stored in self.items.values()}

    def uids(self) -> builtins.list[str]:
        """Every item's ``ical_uid``, sorted, duplicates kept."""
        return sorted(stored.event.ical_uid for stored in self.items.values())

    def id_of(self, ical_uid: str) -> str:
        """The remote id of the (first) item with this UID."""
        return next(
            remote_id
            for remote_id, stored in sorted(self.items.items())
            if stored.event.ical_uid == ical_uid
        )

    def calls_of(self, *methods: Method) -> builtins.list[Call]:
        """The recorded calls of these methods."""
        return [call for call in self.calls if call.method in methods]

    @property
    def writes(self) -> builtins.list[Call]:
        """The recorded create, update and delete calls."""
        return [call for call in self.calls if call.method in WRITES]

    # ---------------------------------------------------------- the port

    @property
    def capabilities(self) -> frozenset[Capability]:
        flags = {
            Capability.READ_ONLY: self.read_only,
            Capability.INCREMENTAL: self.incremental,
            Capability.RETURNS_VERSION_ON_WRITE: self.versions_on_write,
            Capability.CANCELLED_EVENTS: True,
        }
        return frozenset(flag for flag, on in flags.items() if on)

    @property
    def get_many_limit(self) -> int | None:
        return self.limit

    async def list(self) -> Listing:
        self._record(Call(Method.LIST))
        return Listing(self._visible(), self._cursor() if self.incremental else None)

    async def list_changes(self, cursor: str) -> Changes:
        self._record(Call(Method.LIST_CHANGES))
        if not self.incremental:
            raise UnsupportedOperation("This calendar has no change feed.")
        epoch, _, seq = cursor.partition(":")
        if epoch != str(self._epoch) or not seq.isdigit() or int(seq) > self._seq:
            raise CursorExpired()
        touched = {remote_id for n, remote_id in self._feed if n > int(seq)}
        visible = self._visible()
        return Changes(
            changed={i: v for i, v in visible.items() if i in touched},
            deleted=frozenset(i for i in touched if i not in self.items),
            cursor=self._cursor(),
        )

    async def get_many(self, remote_ids: Sequence[str]) -> Sequence[RemoteEvent]:
        self._record(Call(Method.GET_MANY, tuple(remote_ids)))
        if self.limit is not None and len(remote_ids) > self.limit:
            raise UnsupportedOperation(f"At most {self.limit} ids per request.")
        found = []
        for remote_id in remote_ids:
            if remote_id not in self.items:
                continue
            if self.flaky_versions:
                self.touch(remote_id)
            stored = self.items[remote_id]
            found.append(
                RemoteEvent(remote_id, stored.version, stored.event, stored.updated_at)
            )
        return found

    async def create(
        self, event: CalendarEvent, *, idempotency_key: str, notify: Notify
    ) -> Written:
        self._record(
            Call(
                Method.CREATE,
                idempotency_key=idempotency_key,
                notify=notify,
                ical_uid=event.ical_uid,
            )
        )
        self._check_write(None, event)
        for remote_id, stored in sorted(self.items.items()):
            if stored.key == idempotency_key:
                if self.duplicate_create is DuplicateCreate.RAISE:
                    raise ItemAlreadyExists()
                return Written(remote_id, stored.version, adopted=True)
        # one item per UID, as a CalDAV server enforces it (RFC 4791 5.3.2.1,
        # CALDAV:no-uid-conflict); hidden items count, the listing just lags
        if event.ical_uid in self.uids():
            raise ItemAlreadyExists(f"An item with UID {event.ical_uid!r} exists.")
        remote_id = self.id_factory(event, next(self._serial))
        if remote_id in self.items:
            raise ItemAlreadyExists()
        self._store(remote_id, event, idempotency_key)
        return Written(remote_id, self._reply(remote_id))

    async def update(
        self, remote_id: str, event: CalendarEvent, *, if_match: str, notify: Notify
    ) -> str | None:
        self._record(
            Call(
                Method.UPDATE,
                (remote_id,),
                if_match=if_match,
                notify=notify,
                ical_uid=event.ical_uid,
            )
        )
        stored = self._current(remote_id, if_match, event)
        self._store(remote_id, event, stored.key)
        return self._reply(remote_id)

    async def delete(self, remote_id: str, *, if_match: str, notify: Notify) -> None:
        self._record(
            Call(Method.DELETE, (remote_id,), if_match=if_match, notify=notify)
        )
        self._current(remote_id, if_match, None)
        self.remove(remote_id)
        self._reply(None)

    # ---------------------------------------------------------- internals

    def _record(self, call: Call) -> None:
        self.calls.append(call)
        if self._faults:
            raise self._faults.pop(0)

    def _check_write(self, remote_id: str | None, event: CalendarEvent | None) -> None:
        if self.read_only:
            raise UnsupportedOperation("This calendar is read-only.")
        # a hook may register the next one: take the current ones first
        hooks, self._hooks = self._hooks, []
        for hook in hooks:
            hook(remote_id)
        marks = {remote_id, event.ical_uid if event is not None else None}
        if marks & self.fail_writes:
            raise TransientProviderError("Injected write failure.")

    def _current(
        self, remote_id: str, if_match: str, event: CalendarEvent | None
    ) -> Stored:
        self._check_write(remote_id, event)
        stored = self.items.get(remote_id)
        if stored is None:
            raise ItemNotFound()
        if stored.version != if_match:
            raise PreconditionFailed()
        return stored

    def _reply(self, remote_id: str | None) -> str | None:
        """What a write returns: the version, unless told otherwise."""
        if self.lose_write_replies:
            self.lose_write_replies -= 1
            raise TransientProviderError("The reply was lost (injected).")
        if remote_id is None or not self.versions_on_write:
            return None
        return self.items[remote_id].version

    def _store(
        self,
        remote_id: str,
        event: CalendarEvent,
        key: str | None,
        updated_at: dt.datetime | None = None,
    ) -> None:
        version = f"v{next(self._versions)}"
        self.items[remote_id] = Stored(event, version, updated_at or self.clock(), key)
        self._changed(remote_id)

    def _changed(self, remote_id: str) -> None:
        self._seq += 1
        self._feed.append((self._seq, remote_id))

    def _visible(self) -> Mapping[str, str]:
        return {
            remote_id: stored.version
            for remote_id, stored in self.items.items()
            if remote_id not in self.hidden
        }

    def _cursor(self) -> str:
        return f"{self._epoch}:{self._seq}"

    def __repr__(self) -> str:
        return f"MemoryCalendar({len(self.items)} items)"


__all__ = ["WRITES", "Call", "DuplicateCreate", "MemoryCalendar", "Method", "Stored"]
