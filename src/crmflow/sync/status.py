"""The sync status: what both sides held when an ident was last in sync.

One :class:`StatusRow` per ident (the events' ``ical_uid``) with, per side, the
remote id, the version and the content hash seen or written then, after
vdirsyncer's ``status`` table (``sync/status.py``; sync-peers.md §2.1). Side *a*
is the CRM, side *b* the calendar. Per side there is also the change-feed cursor
together with the listing it is relative to, so an incremental listing can be
rebuilt without a full one.

:class:`SyncStatusRepository` is the port; :class:`InMemoryStatusRepository`
implements it for tests by keeping the serialized form of :func:`dump_status`,
so every load is a schema round trip. The database implementation (later, in
``store/``) keeps the same rows and swaps the whole snapshot in one transaction.

Status JSON, schema 1 (the form the database tables mirror)::

    {"schema": 1,
     "rows": [{"ident": .., "id_a": .., "ver_a": .. | null, "hash_a": ..,
               "id_b": .., "ver_b": .. | null, "hash_b": ..}, ...],   # by ident
     "cursors": {"crm": null | {"token": .., "listing": {id: version}},
                 "calendar": null | {...}}}
"""

from __future__ import annotations

import abc
import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from crmflow.sync.errors import StatusSchemaError

#: the version of the serialized status; bump it with a migration in
#: :func:`load_status` when the layout changes
STATUS_SCHEMA: Final = 1


class SideName(enum.StrEnum):
    """The two sides of a sync pair. Status columns ``*_a`` belong to the CRM."""

    #: side *a*: CRM appointments
    CRM = "crm"
    #: side *b*: the provider calendar
    CALENDAR = "calendar"

    @property
    def other(self) -> SideName:
        """The opposite side."""
        return SideName.CALENDAR if self is SideName.CRM else SideName.CRM


@dataclass(frozen=True, slots=True)
class StatusRow:
    """Both sides of one ident as of the last time it was in sync."""

    ident: str
    id_a: str
    #: None when the write that produced it returned no version (case 15)
    ver_a: str | None
    hash_a: str
    id_b: str
    ver_b: str | None
    hash_b: str

    def remote_id(self, side: SideName) -> str:
        """The remote id on ``side``."""
        return self.id_a if side is SideName.CRM else self.id_b

    def version(self, side: SideName) -> str | None:
        """The version on ``side``."""
        return self.ver_a if side is SideName.CRM else self.ver_b

    def content_hash(self, side: SideName) -> str:
        """The content hash on ``side``."""
        return self.hash_a if side is SideName.CRM else self.hash_b


@dataclass(frozen=True, slots=True)
class SideCursor:
    """Where a side's change feed continues, and the listing it continues from."""

    #: the provider's cursor (sync token, delta link, CalDAV sync-token)
    token: str
    #: remote id -> version as of ``token``; changes are applied on top of it
    listing: Mapping[str, str]


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    """The whole status of one sync pair; replaced as a unit."""

    rows: Mapping[str, StatusRow] = field(default_factory=dict)
    cursor_a: SideCursor | None = None
    cursor_b: SideCursor | None = None

    def cursor(self, side: SideName) -> SideCursor | None:
        """The cursor of ``side``."""
        return self.cursor_a if side is SideName.CRM else self.cursor_b


# ------------------------------------------------------------------ serialization


def _dump_cursor(cursor: SideCursor | None) -> dict[str, Any] | None:
    if cursor is None:
        return None
    return {"token": cursor.token, "listing": dict(cursor.listing)}


def dump_status(snapshot: StatusSnapshot) -> str:
    """The snapshot as canonical JSON text (same snapshot, same bytes)."""
    document = {
        "schema": STATUS_SCHEMA,
        "rows": [
            {
                "ident": row.ident,
                "id_a": row.id_a,
                "ver_a": row.ver_a,
                "hash_a": row.hash_a,
                "id_b": row.id_b,
                "ver_b": row.ver_b,
                "hash_b": row.hash_b,
            }
            for _, row in sorted(snapshot.rows.items())
        ],
        "cursors": {
            str(SideName.CRM): _dump_cursor(snapshot.cursor_a),
            str(SideName.CALENDAR): _dump_cursor(snapshot.cursor_b),
        },
    }
    return json.dumps(
        document, ensure_ascii=False, sort_keys=True, separators=(",", ":")
    )


def _load_cursor(data: dict[str, Any] | None) -> SideCursor | None:
    if data is None:
        return None
    return SideCursor(str(data["token"]), _frozen(data["listing"]))


def load_status(text: str) -> StatusSnapshot:
    """Read what :func:`dump_status` wrote.

    Raises:
        StatusSchemaError: the text is not a status of a known schema version.
    """
    try:
        document = json.loads(text)
        schema = document["schema"]
        if schema != STATUS_SCHEMA:
            raise StatusSchemaError(
                f"The sync status has schema {schema!r}; this version reads "
                f"{STATUS_SCHEMA}. Upgrade crmflow, or reset the calendar connection."
            )
        rows = {r["ident"]: StatusRow(**r) for r in document["rows"]}
        cursors = document["cursors"]
        return StatusSnapshot(
            rows=_frozen(rows),
            cursor_a=_load_cursor(cursors[str(SideName.CRM)]),
            cursor_b=_load_cursor(cursors[str(SideName.CALENDAR)]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise StatusSchemaError() from exc


# ------------------------------------------------------------------ the port


class SyncStatusRepository(abc.ABC):
    """Where one sync pair keeps its status (one per tenant, connection, calendar).

    Swap semantics, as vdirsyncer's ``new_status`` table: the engine reads the
    snapshot once, works on a copy and hands back the complete new snapshot;
    :meth:`commit` replaces the old one atomically (one transaction). A crash
    leaves either the old or the new snapshot, never a mix, and either is safe
    to sync from (the engine re-detects whatever it did not record).
    One writer per pair at a time is the caller's job (a job lock per
    connection).
    """

    @abc.abstractmethod
    async def load(self) -> StatusSnapshot:
        """The last committed snapshot; an empty one before the first sync.

        Raises:
            StatusSchemaError: the stored status cannot be read.
        """

    @abc.abstractmethod
    async def commit(self, snapshot: StatusSnapshot) -> None:
        """Replace the stored snapshot with ``snapshot``, all or nothing."""


class InMemoryStatusRepository(SyncStatusRepository):
    """A status kept in memory as schema-1 JSON text. For tests only: it is lost
    when the process ends."""

    def __init__(self, text: str | None = None) -> None:
        #: the committed snapshot, serialized (None: never committed)
        self.text = text
        #: how many times :meth:`commit` ran
        self.commits = 0

    async def load(self) -> StatusSnapshot:
        return StatusSnapshot() if self.text is None else load_status(self.text)

    async def commit(self, snapshot: StatusSnapshot) -> None:
        self.text = dump_status(snapshot)
        self.commits += 1
