"""Delta query state: rounds, ``$skiptoken`` pages, ``$deltatoken`` snapshots and 410s.

Graph's behaviour (event-delta.md, delta-query-overview.md; microsoft-graph.md
§3, checklist 12-14):

* A round starts with the initial request (or a stored ``@odata.deltaLink``)
  and is served in pages: every page but the last carries
  ``@odata.nextLink`` (``$skiptoken``), the last ``@odata.deltaLink``
  (``$deltatoken``). Tokens are opaque and "encode startDateTime, endDateTime
  and every other query parameter".
* A follow-up round returns items created or changed since the token, and
  ``{"id", "@removed": {"reason": "deleted"}}`` for items that left the result
  (deleted, or moved out of the window). Changes to items *outside* the
  window are also reported as ``@removed`` ("Filter the events under @removed
  for the date range that your scenario requires").
* "No indication is given for a deleted occurrence" (closed docs PR #4501,
  observed) — a cancelled occurrence of a live series is not reported.
* "Series won't be split on multiple delta pages": a page may exceed
  ``odata.maxpagesize`` to keep a series' occurrences together.
* Expired or invalidated tokens answer 410 ``SyncStateNotFound`` with a
  ``Location`` header holding "a request URL with an empty $deltaToken (same as
  the initial query)" — the token carries its window for that; earlier
  ``nextLink``s of a round go stale the same way. A mailbox's tokens are
  invalidated together by bumping its *epoch* (control API), and the oldest
  tokens are evicted beyond :attr:`GraphSettings.delta_tokens_per_mailbox`
  (Outlook: "dependent on the size of the internal delta token cache").

The HTTP layer computes the current item set; this module diffs and pages.
Call with the state lock held.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from crmflow.sandbox.microsoft.errors import GraphError

__all__ = [
    "DeltaData",
    "DeltaEntry",
    "DeltaRound",
    "DeltaToken",
    "Deltas",
    "sync_state_not_found",
    "token_params",
]


def _encode_params(params: dict[str, str]) -> str:
    raw = json.dumps(params, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def token_params(token: str) -> dict[str, str] | None:
    """The query parameters a ``$deltatoken`` was minted for (None if unreadable)."""
    _, _, encoded = token.partition(".")
    if not encoded:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (ValueError, TypeError):
        return None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        return None
    return data


def sync_state_not_found(location: str | None = None) -> GraphError:
    """410 Gone with the observed PascalCase code (docs #2350 / docs-contrib #7897)."""
    headers = {"Location": location} if location else {}
    return GraphError(
        410,
        "SyncStateNotFound",
        "The sync state generation is not found; generation=0;[highest=0].",
        headers=headers,
    )


@dataclass
class DeltaEntry:
    """One item of a round: a changed item (rendered at page time) or a removal."""

    id: str
    removed: bool = False
    #: "created" / "updated" / "deleted" (for the messages ``changeType`` filter)
    change: str = "updated"


@dataclass
class DeltaToken:
    """The state behind one ``$deltatoken``."""

    token: str
    email: str
    #: "calendarView" or "messages"
    kind: str
    #: query parameters of the original request (window, $select, folder, …)
    params: dict[str, str]
    #: id -> change key of every item in the result at the end of the round
    snapshot: dict[str, str]
    #: journal sequence number at the round's start
    seq: int
    epoch: int
    created: datetime


@dataclass
class DeltaRound:
    """A round being served in pages."""

    id: str
    email: str
    kind: str
    params: dict[str, str]
    pages: list[list[DeltaEntry]]
    next_snapshot: dict[str, str]
    next_seq: int
    epoch: int
    created: datetime


@dataclass
class DeltaData:
    """Everything persisted for delta queries."""

    tokens: dict[str, DeltaToken] = field(default_factory=dict)
    rounds: dict[str, DeltaRound] = field(default_factory=dict)
    #: per mailbox; bumping it invalidates every token and round of the mailbox
    epochs: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class CurrentItem:
    """An item in the current result set."""

    id: str
    change_key: str
    #: items of one group (a series) are never split across pages
    group: str


class Deltas:
    """Delta rules over :class:`DeltaData`."""

    def __init__(
        self, data: DeltaData, *, max_age_s: float | None, per_mailbox: int
    ) -> None:
        self.data = data
        self.max_age_s = max_age_s
        self.per_mailbox = per_mailbox

    def epoch(self, email: str) -> int:
        """The mailbox's current epoch."""
        return self.data.epochs.get(email, 0)

    def invalidate(self, email: str) -> int:
        """Expire every token and round of the mailbox; return how many tokens died."""
        self.data.epochs[email] = self.epoch(email) + 1
        dead = [k for k, t in self.data.tokens.items() if t.email == email]
        for key in dead:
            del self.data.tokens[key]
        for key in [k for k, r in self.data.rounds.items() if r.email == email]:
            del self.data.rounds[key]
        return len(dead)

    def token(self, token: str, kind: str, now: datetime) -> DeltaToken:
        """Return a live delta token.

        Raises:
            GraphError: 410 SyncStateNotFound (unknown, evicted, too old, or of
                another resource).
        """
        found = self.data.tokens.get(token)
        if (
            found is None
            or found.kind != kind
            or found.epoch != self.epoch(found.email)
        ):
            raise sync_state_not_found()
        if self.max_age_s is not None and now - found.created > timedelta(
            seconds=self.max_age_s
        ):
            raise sync_state_not_found()
        return found

    def start_round(
        self,
        *,
        email: str,
        kind: str,
        params: dict[str, str],
        current: list[CurrentItem],
        previous: DeltaToken | None,
        out_of_window: list[str],
        silent_removals: set[str],
        next_seq: int,
        page_size: int,
        now: datetime,
    ) -> DeltaRound:
        """Diff ``current`` against ``previous`` and page the result.

        ``out_of_window`` ids changed outside the result since ``previous`` and
        are reported as removed; ``silent_removals`` left the result without a
        signal (cancelled occurrences).
        """
        old = previous.snapshot if previous else {}
        current_ids = {c.id for c in current}
        groups: dict[str, list[DeltaEntry]] = {}
        for item in current:
            if previous is not None and old.get(item.id) == item.change_key:
                continue
            change = "created" if item.id not in old else "updated"
            groups.setdefault(item.group, []).append(DeltaEntry(item.id, change=change))
        removed = [i for i in old if i not in current_ids and i not in silent_removals]
        removed += [i for i in out_of_window if i not in current_ids and i not in old]
        for item_id in dict.fromkeys(removed):
            groups.setdefault("removed:" + item_id, []).append(
                DeltaEntry(item_id, removed=True, change="deleted")
            )
        pages: list[list[DeltaEntry]] = [[]]
        for entries in groups.values():
            if pages[-1] and len(pages[-1]) + len(entries) > page_size:
                pages.append([])
            pages[-1].extend(entries)
        rnd = DeltaRound(
            id=secrets.token_urlsafe(18),
            email=email,
            kind=kind,
            params=dict(params),
            pages=pages,
            next_snapshot={c.id: c.change_key for c in current},
            next_seq=next_seq,
            epoch=self.epoch(email),
            created=now,
        )
        self.data.rounds[rnd.id] = rnd
        self._trim_rounds(email)
        return rnd

    def page(self, skiptoken: str, kind: str) -> tuple[DeltaRound, int]:
        """Resolve a ``$skiptoken`` to (round, page index).

        Raises:
            GraphError: 410 SyncStateNotFound for stale or unknown skip tokens.
        """
        round_id, _, index = skiptoken.rpartition(".")
        rnd = self.data.rounds.get(round_id)
        if (
            rnd is None
            or rnd.kind != kind
            or rnd.epoch != self.epoch(rnd.email)
            or not index.isdigit()
        ):
            raise sync_state_not_found()
        number = int(index)
        if number >= len(rnd.pages):
            raise sync_state_not_found()
        return rnd, number

    @staticmethod
    def skiptoken(rnd: DeltaRound, index: int) -> str:
        """The ``$skiptoken`` of page ``index`` of ``rnd``."""
        return f"{rnd.id}.{index}"

    def finish(self, rnd: DeltaRound, now: datetime) -> DeltaToken:
        """The round's last page was served: mint its ``$deltatoken``.

        Like Graph's, the token itself encodes the round's query parameters
        (:func:`token_params`), so a 410 for an expired token can still name
        the initial request in its ``Location`` header.
        """
        token = DeltaToken(
            token=secrets.token_urlsafe(24) + "." + _encode_params(rnd.params),
            email=rnd.email,
            kind=rnd.kind,
            params=dict(rnd.params),
            snapshot=dict(rnd.next_snapshot),
            seq=rnd.next_seq,
            epoch=rnd.epoch,
            created=now,
        )
        self.data.tokens[token.token] = token
        mine = sorted(
            (t for t in self.data.tokens.values() if t.email == rnd.email),
            key=lambda t: t.created,
        )
        for stale in mine[: max(0, len(mine) - self.per_mailbox)]:
            del self.data.tokens[stale.token]
        return token

    def _trim_rounds(self, email: str) -> None:
        mine = sorted(
            (r for r in self.data.rounds.values() if r.email == email),
            key=lambda r: r.created,
        )
        for stale in mine[: max(0, len(mine) - self.per_mailbox)]:
            del self.data.rounds[stale.id]
