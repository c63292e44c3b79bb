"""``MailProvider`` for IMAP + SMTP accounts: iCloud Mail and any IMAP server.

IMAP (RFC 9051 / RFC 3501) runs on ``imapclient`` in a worker thread
(``asyncio.to_thread``). Every call opens its own connection, signs in
(``AUTHENTICATE PLAIN`` when offered, UTF-8 safe; else ``LOGIN``; for an
account connected through OAuth, ``AUTHENTICATE XOAUTH2`` with an access token
asked for afresh on each connection) and logs out when it ends, also after an error or when a fetch is abandoned half-way.
Security modes as in ``_verify.py``: implicit TLS, STARTTLS (never a silent
fall-back to plaintext) or none, which only loopback hosts may use. Sending is
``_smtp.py``'s job.

Folders: INBOX and the Sent folder, found by its ``\\Sent`` marker (RFC 6154
SPECIAL-USE), else by name ("Sent", "Sent Items", "Sent Messages" in the
personal namespace, through ``imapclient.find_special_folder``). A mailbox
without one is read as INBOX alone.

Provider ids: ``<folder>/<UIDVALIDITY>/<UID>``, e.g. ``inbox/1700000000/42``.
A message keeps its id for as long as the folder keeps its UIDVALIDITY.

Cursor: JSON, one entry per folder::

    {"inbox": {"uidvalidity": 1700000000, "last_uid": 42, "highestmodseq": 311},
     "sent": {"uidvalidity": 1700000001, "last_uid": 7}}

:meth:`ImapMailbox.fetch`:

* without a cursor: ``UID SEARCH SINCE`` the day before ``since`` (IMAP
  compares dates, not times, in the server's time zone, so one day earlier is
  never too late), then the messages in pages;
* with a cursor: UIDs above ``last_uid`` are new. When the server offers
  CONDSTORE (RFC 7162), read-state changes since ``highestmodseq`` come from
  ``UID FETCH ... (CHANGEDSINCE ...)`` as ``FlagChange``s; when it offers
  QRESYNC (enabled at sign-in), expunged UIDs come from the ``VANISHED``
  modifier of the same command as ``removed``. Without QRESYNC removals are
  not reported: telling which UIDs went away would need the cursor to list
  every UID it has seen. Without CONDSTORE read-state changes made elsewhere
  are not reported;
* a folder whose UIDVALIDITY differs from the cursor's raises
  ``CursorExpired``: the caller fetches again from None and de-duplicates by
  Message-ID;
* messages are fetched with ``BODY.PEEK[]`` (so nothing becomes ``\\Seen``) and
  ``FLAGS``, ``page_size`` UIDs per command and per :class:`MailBatch`;
  flag changes and removals come in batches of at most
  :data:`MAX_CHANGES_PER_BATCH`. Only the last batch carries the new cursor,
  and a fetch always yields at least one batch.

Errors are the ``crmflow.providers.base`` tree; no ``imaplib``, ``imapclient``,
``ssl`` or socket exception escapes, and no message holds the password:
refused sign-in -> ``AuthError``; network failures, dropped connections and
answers like ``[UNAVAILABLE]`` -> ``TransientProviderError``; TLS failures
and other refusals -> ``ProviderError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import imaplib
import json
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
)
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imapclient import SEEN, IMAPClient  # type: ignore[import-untyped]
from imapclient.imapclient import SENT  # type: ignore[import-untyped]
from imapclient.response_parser import (  # type: ignore[import-untyped]
    parse_fetch_response,
)

from crmflow.domain.mail import (
    FlagChange,
    MailBatch,
    MailFolder,
    OutgoingMessage,
    SentMessage,
)
from crmflow.domain.secret import Secret
from crmflow.mail.parse_pool import RawMessage, parse_page
from crmflow.providers._tls import (
    client_context,
    server_text,
    tls_failure,
    unreachable,
)
from crmflow.providers.base import (
    AuthError,
    CursorExpired,
    ItemNotFound,
    ProviderError,
    TransientProviderError,
    UnsupportedOperation,
)
from crmflow.providers.imap._signin import SignIn
from crmflow.providers.imap._smtp import submit
from crmflow.providers.imap._verify import DEFAULT_TIMEOUT_S, check_transport
from crmflow.providers.imap.presets import MailServer, Security

__all__ = ["DEFAULT_PAGE_SIZE", "MAX_CHANGES_PER_BATCH", "ImapMailbox"]

_log = logging.getLogger(__name__)

#: messages per ``UID FETCH`` and per batch, unless the caller says otherwise
DEFAULT_PAGE_SIZE = 200
#: flag changes (and, separately, removals) per batch
MAX_CHANGES_PER_BATCH = 1000
#: RFC 2177: a server may log out a client idling for 30 minutes, so IDLE is
#: ended and started again after this many seconds
IDLE_RENEW_S = 25 * 60.0
#: how often a waiting IDLE checks whether its caller gave up, in seconds
_IDLE_SLICE_S = 0.5

_INBOX = "INBOX"
#: created by :meth:`ImapMailbox.send` when the mailbox has no Sent folder
NEW_SENT_FOLDER = "Sent"
_PROVIDER_ID = re.compile(r"\A(inbox|sent)/([0-9]+)/([0-9]+)\Z")
_APPENDUID = re.compile(rb"\[APPENDUID ([0-9]+) ([0-9]+)\]", re.IGNORECASE)
#: RFC 5530 response codes that mean "not now" rather than "no"
_TRY_LATER = ("[UNAVAILABLE]", "[INUSE]", "[SERVERBUG]", "[LIMIT]")
#: untagged responses during IDLE that mean the INBOX changed
_CHANGES = frozenset({b"EXISTS", b"EXPUNGE", b"FETCH", b"VANISHED"})
_IMAP_TLS_HINT = (
    "The port may not use implicit TLS: IMAP uses TLS on 993 and STARTTLS on 143."
)


# -------------------------------------------------------------------- cursor


@dataclass(frozen=True, slots=True)
class _FolderCursor:
    """Where the sync of one folder stands."""

    uidvalidity: int
    #: the highest UID handed out (or skipped as older than ``since``)
    last_uid: int
    #: CONDSTORE's HIGHESTMODSEQ when the folder was read; None without it
    highestmodseq: int | None = None


def _read_cursor(cursor: str) -> dict[MailFolder, _FolderCursor]:
    """Raises CursorExpired: ``cursor`` is not one this adapter wrote."""
    try:
        data = json.loads(cursor)
        found: dict[MailFolder, _FolderCursor] = {}
        for key, entry in data.items():
            values = [entry["uidvalidity"], entry["last_uid"]]
            modseq = entry.get("highestmodseq")
            if modseq is not None:
                values.append(modseq)
            if not all(type(v) is int and v >= 0 for v in values):
                raise ValueError(key)
            found[MailFolder(key)] = _FolderCursor(*values)
    except (ValueError, TypeError, KeyError, AttributeError):
        raise CursorExpired(
            "The saved position in the mailbox is not readable; the mailbox is read "
            "again from the start."
        ) from None
    return found


def _write_cursor(folders: Mapping[MailFolder, _FolderCursor]) -> str:
    data: dict[str, dict[str, int]] = {}
    for folder, entry in folders.items():
        item = {"uidvalidity": entry.uidvalidity, "last_uid": entry.last_uid}
        if entry.highestmodseq is not None:
            item["highestmodseq"] = entry.highestmodseq
        data[folder.value] = item
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _provider_id(folder: MailFolder, uidvalidity: int, uid: int) -> str:
    return f"{folder.value}/{uidvalidity}/{uid}"


def _parse_provider_id(provider_id: str) -> tuple[MailFolder, int, int]:
    match = _PROVIDER_ID.match(provider_id)
    if match is None:
        raise ItemNotFound(f"{provider_id!r} is not a message id of an IMAP mailbox.")
    return MailFolder(match[1]), int(match[2]), int(match[3])


# ---------------------------------------------------------- the connection


@dataclass(frozen=True, slots=True)
class _Selected:
    """A folder's state as ``SELECT`` / ``EXAMINE`` reported it."""

    uidvalidity: int
    uidnext: int | None
    exists: int
    highestmodseq: int | None


#: a mailbox's INBOX state (UIDVALIDITY, UIDNEXT, EXISTS, HIGHESTMODSEQ), to
#: tell whether it changed between two connections
InboxState = _Selected


@dataclass(slots=True)
class _FolderPlan:
    """What one fetch reads from one folder."""

    folder: MailFolder
    name: str
    selected: _Selected
    new_uids: list[int]
    cursor: _FolderCursor
    flags: list[FlagChange] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def _is_seen(flags: Iterable[Any]) -> bool:
    return any(isinstance(f, bytes) and f.lower() == SEEN.lower() for f in flags)


def _uid_set(text: bytes, highest: int) -> Iterator[int]:
    """The UIDs of a ``VANISHED`` response (``(EARLIER) 3:5,9``), up to ``highest``."""
    for part in text.replace(b"(EARLIER)", b"").strip().split(b","):
        low, _, high = part.strip().partition(b":")
        if not low.isdigit() or (high and not high.isdigit()):
            continue  # "*" or garbage: nothing we handed out
        first, last = sorted((int(low), int(high or low)))
        yield from range(max(first, 1), min(last, highest) + 1)


def _changed(responses: Iterable[Any]) -> bool:
    """Whether IDLE responses report new, removed or changed messages."""
    for response in responses:
        if isinstance(response, tuple) and any(
            isinstance(part, bytes) and part.upper() in _CHANGES
            for part in response[:2]
        ):
            return True
    return False


@contextlib.contextmanager
def _imap_errors(what: str, doing: str) -> Iterator[None]:
    """Translate failures of a command on a signed-in connection."""
    try:
        yield
    except imaplib.IMAP4.abort:
        raise TransientProviderError(
            f"{what} closed the connection while {doing}; crmflow tries again later."
        ) from None
    except imaplib.IMAP4.error as exc:
        reply = server_text(str(exc))
        if any(code in reply.upper() for code in _TRY_LATER):
            raise TransientProviderError(
                f"{what} could not finish {doing} right now ({reply}); crmflow tries "
                "again later."
            ) from None
        raise ProviderError(f"{what} failed {doing} ({reply}).") from None
    except OSError as exc:  # sockets, timeouts and TLS records alike
        raise TransientProviderError(
            f"{what} stopped answering while {doing} ({type(exc).__name__}); crmflow "
            "tries again later."
        ) from None


class _Session:
    """One signed-in IMAP connection. Blocking: use it from a worker thread.

    Every command holds a lock, so :meth:`close` called from another thread
    waits for the command under way.
    """

    def __init__(self, client: Any, what: str) -> None:
        self._client = client
        self.what = what
        self._lock = threading.Lock()
        self._selected: tuple[str, _Selected] | None = None
        self.capabilities = self._capabilities()
        self.qresync = False
        self.condstore = "CONDSTORE" in self.capabilities

    # -- sign-in

    @classmethod
    def open(
        cls,
        server: MailServer,
        sign_in: SignIn,
        ctx: ssl.SSLContext | None,
        timeout_s: float,
    ) -> _Session:
        """Connect, sign in and enable QRESYNC / CONDSTORE where offered."""
        what = server.label("IMAP")
        try:
            client = IMAPClient(
                server.host,
                port=server.port,
                ssl=server.security is Security.TLS,
                ssl_context=ctx,
                timeout=timeout_s,
            )
        except ssl.SSLError as exc:
            raise ProviderError(
                tls_failure(what, exc, _IMAP_TLS_HINT).message
            ) from None
        except imaplib.IMAP4.abort:
            raise TransientProviderError(
                f"{what} closed the connection before greeting; crmflow tries again "
                "later."
            ) from None
        except imaplib.IMAP4.error:
            raise ProviderError(
                f"{what} did not answer like an IMAP server; check the host and port "
                "in Settings -> Integrations."
            ) from None
        except OSError as exc:
            raise TransientProviderError(
                f"{unreachable(what, exc, timeout_s).message} crmflow tries again later."
            ) from None
        try:
            cls._sign_in(client, server, sign_in, ctx, what)
            session = cls(client, what)
            with _imap_errors(what, "enabling extensions"):
                session._enable()
        except BaseException:
            with contextlib.suppress(Exception):
                client.shutdown()
            raise
        return session

    @staticmethod
    def _sign_in(
        client: Any,
        server: MailServer,
        sign_in: SignIn,
        ctx: ssl.SSLContext | None,
        what: str,
    ) -> None:
        with _imap_errors(what, "signing in"):
            if server.security is Security.STARTTLS:
                if not client.has_capability("STARTTLS"):
                    raise ProviderError(
                        f"{what} does not offer STARTTLS, so the "
                        f"{sign_in.credential} cannot be sent safely; choose TLS "
                        "(usually port 993) in Settings -> Integrations."
                    )
                try:
                    client.starttls(ctx)
                except ssl.SSLError as exc:
                    raise ProviderError(
                        tls_failure(what, exc, _IMAP_TLS_HINT).message
                    ) from None
            if client.has_capability("LOGINDISABLED"):
                raise ProviderError(
                    f"{what} accepts sign-in only over TLS; choose TLS or STARTTLS in "
                    "Settings -> Integrations."
                )
            if sign_in.oauth and not client.has_capability("AUTH=XOAUTH2"):
                raise ProviderError(sign_in.not_offered(what))
            try:
                if sign_in.oauth:
                    # not oauth2_login: it answers the error challenge with the
                    # credentials again, where the protocol asks for an empty line
                    client.sasl_login("XOAUTH2", sign_in.imap_response)
                elif client.has_capability("AUTH=PLAIN"):
                    client.plain_login(sign_in.username, sign_in.secret.reveal())
                else:
                    client.login(sign_in.username, sign_in.secret.reveal())
            except UnicodeEncodeError:
                # LOGIN (RFC 3501) carries ASCII only
                raise ProviderError(
                    f"{what} offers only the LOGIN command, which cannot carry "
                    "non-ASCII characters; use a password without them (an "
                    "app-specific password, for example)."
                ) from None
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error as exc:
                reply = server_text(str(exc))
                if "[UNAVAILABLE]" in reply.upper():
                    raise TransientProviderError(
                        f"{what} cannot sign you in right now ({reply}); crmflow "
                        "tries again later."
                    ) from None
                raise AuthError(sign_in.refused(what, reply)) from None

    def _capabilities(self) -> frozenset[str]:
        with _imap_errors(self.what, "reading the capabilities"):
            raw = self._client.capabilities()
        return frozenset(
            (c.decode("ascii", "replace") if isinstance(c, bytes) else str(c)).upper()
            for c in raw
        )

    def _enable(self) -> None:
        if "ENABLE" not in self.capabilities:
            return
        wanted = "QRESYNC" if "QRESYNC" in self.capabilities else "CONDSTORE"
        if wanted not in self.capabilities:
            return
        enabled = {
            (e.decode("ascii", "replace") if isinstance(e, bytes) else str(e)).upper()
            for e in self._client.enable(wanted)
        }
        self.qresync = "QRESYNC" in enabled
        # RFC 7162 §3.2.3: enabling QRESYNC enables CONDSTORE too
        self.condstore = self.condstore or bool(enabled)

    # -- plumbing

    @contextlib.contextmanager
    def _command(self, doing: str) -> Iterator[Any]:
        with self._lock, _imap_errors(self.what, doing):
            yield self._client

    def close(self) -> None:
        """Log out (best effort) and close the socket."""
        with self._lock:
            try:
                self._client.logout()
            except Exception:  # the connection is gone already: just close it
                with contextlib.suppress(Exception):
                    self._client.shutdown()

    def abort(self) -> None:
        """Make a command blocked in another thread fail now (its caller left).

        Shuts the socket down below TLS (the base ``socket`` method: the
        ``ssl`` wrapper's own would tear its state away from the reader).
        """
        with contextlib.suppress(Exception):
            socket.socket.shutdown(self._client.socket(), socket.SHUT_RDWR)

    def select(self, name: str, *, readonly: bool) -> _Selected:
        with self._command(f"opening the folder {name!r}") as client:
            info = client.select_folder(name, readonly=readonly)
        uidvalidity = info.get(b"UIDVALIDITY")
        if not isinstance(uidvalidity, int):
            raise ProviderError(
                f"{self.what} reports no UIDVALIDITY for {name!r}; crmflow cannot "
                "keep track of its messages."
            )
        uidnext, modseq = info.get(b"UIDNEXT"), info.get(b"HIGHESTMODSEQ")
        selected = _Selected(
            uidvalidity=uidvalidity,
            uidnext=uidnext if isinstance(uidnext, int) else None,
            exists=int(info.get(b"EXISTS", 0)),
            highestmodseq=modseq
            if self.condstore and isinstance(modseq, int)
            else None,
        )
        self._selected = (name, selected)
        return selected

    def search(self, criteria: list[Any]) -> list[int]:
        with self._command("searching the folder") as client:
            found = client.search(criteria)
        return sorted(int(uid) for uid in found)

    def sent_folder(self) -> str | None:
        with self._command("looking for the Sent folder") as client:
            name = client.find_special_folder(SENT)
        return str(name) if name else None

    # -- fetch

    def plan(
        self, known: Mapping[MailFolder, _FolderCursor], since: dt.datetime
    ) -> list[_FolderPlan]:
        """Phase one of a fetch: what is new, changed and gone in each folder."""
        folders = [(MailFolder.INBOX, _INBOX)]
        sent = self.sent_folder()
        if sent is not None and sent.upper() != _INBOX:
            folders.append((MailFolder.SENT, sent))
        elif MailFolder.SENT in known:
            raise CursorExpired(
                f"The Sent folder of {self.what} is gone; the mailbox is read again."
            )
        return [
            self._plan_folder(folder, name, known.get(folder), since)
            for folder, name in folders
        ]

    def _plan_folder(
        self,
        folder: MailFolder,
        name: str,
        entry: _FolderCursor | None,
        since: dt.datetime,
    ) -> _FolderPlan:
        selected = self.select(name, readonly=True)
        if entry is not None and entry.uidvalidity != selected.uidvalidity:
            raise CursorExpired(
                f"The folder {name!r} of {self.what} was reset (its UIDVALIDITY "
                "changed); the mailbox is read again."
            )
        if entry is None:
            if since.tzinfo is None:
                since = since.replace(tzinfo=dt.UTC)
            day = (since.astimezone(dt.UTC) - dt.timedelta(days=1)).date()
            new_uids = self.search(["SINCE", day])
            floor = 0
            if selected.uidnext is not None:
                floor = selected.uidnext - 1
            elif selected.exists:
                floor = max(self.search(["UID", "*"]), default=0)
            last_uid = max([floor, *new_uids])
        else:
            found = self.search(["UID", f"{entry.last_uid + 1}:*"])
            new_uids = [uid for uid in found if uid > entry.last_uid]
            last_uid = max([entry.last_uid, *new_uids])
        plan = _FolderPlan(
            folder=folder,
            name=name,
            selected=selected,
            new_uids=new_uids,
            cursor=_FolderCursor(
                selected.uidvalidity, last_uid, selected.highestmodseq
            ),
        )
        if (
            entry is not None
            and entry.last_uid > 0
            and entry.highestmodseq is not None
            and selected.highestmodseq is not None
            and selected.highestmodseq != entry.highestmodseq
        ):
            self._changes(plan, entry)
        return plan

    def _changes(self, plan: _FolderPlan, entry: _FolderCursor) -> None:
        """Read-state changes (CONDSTORE) and removals (QRESYNC) up to the
        cursor's ``last_uid``, since its ``highestmodseq``."""
        modifiers = f"CHANGEDSINCE {entry.highestmodseq}"
        if self.qresync:
            modifiers += " VANISHED"
        with self._command("reading changes") as client:
            # imapclient parses no VANISHED responses: send the command through
            # its imaplib connection, which keeps them in untagged_responses
            imap = client._imap
            imap.untagged_responses.pop("VANISHED", None)
            typ, data = imap.uid(
                "FETCH", f"1:{entry.last_uid}", "(UID FLAGS)", f"({modifiers})"
            )
            if typ != "OK":
                raise imaplib.IMAP4.error(f"FETCH failed: {data[-1]!r}")
            vanished = imap.untagged_responses.pop("VANISHED", [])
            fetched = parse_fetch_response(
                [line for line in data if line is not None], True, True
            )
        uidvalidity = plan.selected.uidvalidity
        for uid, item in sorted(fetched.items()):
            if isinstance(uid, int) and 0 < uid <= entry.last_uid:
                plan.flags.append(
                    FlagChange(
                        _provider_id(plan.folder, uidvalidity, uid),
                        _is_seen(item.get(b"FLAGS", ())),
                    )
                )
        gone: set[int] = set()
        for text in vanished:
            if isinstance(text, bytes):
                gone.update(_uid_set(text, entry.last_uid))
        plan.removed = [_provider_id(plan.folder, uidvalidity, u) for u in sorted(gone)]

    def messages(self, plan: _FolderPlan, uids: list[int]) -> list[RawMessage]:
        """Phase two: one page of messages, as fetched (parsed by the caller)."""
        if self._selected is None or self._selected[0] != plan.name:
            selected = self.select(plan.name, readonly=True)
            if selected.uidvalidity != plan.selected.uidvalidity:
                raise CursorExpired(
                    f"The folder {plan.name!r} of {self.what} was reset while it was "
                    "read; the mailbox is read again."
                )
        with self._command("fetching messages") as client:
            fetched = client.fetch(uids, ["BODY.PEEK[]", "FLAGS"])
        found: list[RawMessage] = []
        for uid in sorted(fetched):
            item = fetched[uid]
            raw = item.get(b"BODY[]")
            if not isinstance(raw, bytes):
                continue  # expunged meanwhile
            found.append(
                RawMessage(
                    raw,
                    provider_id=_provider_id(
                        plan.folder, plan.selected.uidvalidity, int(uid)
                    ),
                    folder=plan.folder,
                    is_read=_is_seen(item.get(b"FLAGS", ())),
                )
            )
        return found

    # -- writes

    def set_seen(
        self, folder: MailFolder, uidvalidity: int, uid: int, seen: bool
    ) -> None:
        name = _INBOX if folder is MailFolder.INBOX else self.sent_folder()
        gone = ItemNotFound(
            f"The message is no longer in the {folder.value} folder of {self.what}."
        )
        if name is None:
            raise gone
        if self.select(name, readonly=False).uidvalidity != uidvalidity:
            raise gone
        if uid not in self.search(["UID", str(uid)]):
            raise gone
        with self._command("changing the read state") as client:
            if seen:
                client.add_flags([uid], [SEEN], silent=True)
            else:
                client.remove_flags([uid], [SEEN], silent=True)

    def file_copy(self, raw: bytes) -> str | None:
        """APPEND ``raw`` to the Sent folder as read; the copy's provider id
        when the server reports it (UIDPLUS ``APPENDUID``)."""
        name = self.sent_folder()
        if name is None:
            with self._command("creating the Sent folder") as client:
                try:
                    client.create_folder(NEW_SENT_FOLDER)
                except imaplib.IMAP4.abort:
                    raise
                except imaplib.IMAP4.error:
                    if not client.folder_exists(NEW_SENT_FOLDER):
                        raise
            name = NEW_SENT_FOLDER
        with self._command("saving the sent copy") as client:
            reply = client.append(name, raw, flags=(SEEN,))
        if not isinstance(reply, bytes):
            return None
        match = _APPENDUID.search(reply)
        if match is None:
            return None
        return _provider_id(MailFolder.SENT, int(match[1]), int(match[2]))

    # -- IDLE

    def wait(
        self, baseline: _Selected | None, timeout_s: float, stop: threading.Event
    ) -> tuple[bool, _Selected]:
        """IDLE on INBOX until it changes, ``timeout_s`` passes or ``stop`` is set.

        True at once when INBOX differs from ``baseline``; False at once when
        the server does not offer IDLE. Also returns INBOX's state at the
        end (after a change: read again once IDLE is done), the baseline of
        the next wait.
        """
        selected = self.select(_INBOX, readonly=True)
        if baseline is not None and selected != baseline:
            return True, selected
        if "IDLE" not in self.capabilities:
            return False, selected
        deadline = time.monotonic() + timeout_s
        changed = False
        with self._command("waiting for new mail") as client:
            while not changed and not stop.is_set() and time.monotonic() < deadline:
                renew_at = min(deadline, time.monotonic() + IDLE_RENEW_S)
                client.idle()
                try:
                    while not changed and not stop.is_set():
                        left = renew_at - time.monotonic()
                        if left <= 0:
                            break
                        changed = _changed(
                            client.idle_check(timeout=min(left, _IDLE_SLICE_S))
                        )
                except BaseException:
                    with contextlib.suppress(Exception):
                        client.idle_done()
                    raise
                _text, responses = client.idle_done()
                changed = changed or _changed(responses)
        if changed:
            selected = self.select(_INBOX, readonly=True)
        return changed, selected


async def _close_after(opening: asyncio.Future[_Session]) -> None:
    """Log out the session of a sign-in whose caller was cancelled, before
    the cancellation goes on: a callback would never run once the event loop
    closes (a stopping process), and the connection would be left open."""
    try:
        session = await asyncio.shield(opening)
    except asyncio.CancelledError:
        opening.add_done_callback(_close_when_open)  # cancelled again
        return
    except Exception:  # the sign-in failed: nothing to close
        return
    with contextlib.suppress(Exception):
        await asyncio.to_thread(session.close)


def _close_when_open(opening: asyncio.Future[_Session]) -> None:
    """Close the session of a sign-in whose caller was cancelled meanwhile."""
    if not opening.cancelled() and opening.exception() is None:
        asyncio.get_running_loop().run_in_executor(None, opening.result().close)


# ------------------------------------------------------------------- adapter


class ImapMailbox:
    """One IMAP + SMTP mailbox (iCloud Mail, Fastmail, a company server ...).

    Implements :class:`crmflow.domain.mail.MailProvider`, plus
    :meth:`wait_for_change` (IMAP IDLE) for a long-running listener. Holds no
    connection between calls; one object may serve concurrent calls.
    """

    def __init__(
        self,
        imap: MailServer,
        smtp: MailServer,
        username: str,
        password: Secret | None = None,
        *,
        token: Callable[[], Awaitable[Secret]] | None = None,
        address: str,
        save_sent_copy: bool = True,
        extra_ca_file: Path | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> None:
        """
        Args:
            imap, smtp: the account's servers; ``Security.NONE`` only to
                loopback (checked at each call).
            username: the sign-in name at both servers.
            password: the account's password; or None with ``token``.
            token: returns a valid OAuth 2.0 access token (refreshing it when
                needed); called before each connection, which then signs in
                with XOAUTH2.
            address: the mailbox's own email address.
            save_sent_copy: APPEND what is sent to the Sent folder; False for
                servers whose SMTP side files the copy itself (Gmail), where
                an APPEND would make a second one.
            extra_ca_file: PEM certificates trusted besides the system's.
            timeout_s: connect and per-reply timeout, in seconds.
            page_size: messages per fetched batch.
        """
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        if (password is None) == (token is None):
            raise ValueError("give a password or a token source, not both")
        self.imap = imap
        self.smtp = smtp
        self.username = username
        self.address = address
        self._password = password
        self._token = token
        self._save_sent_copy = save_sent_copy
        self._extra_ca_file = extra_ca_file
        self._timeout_s = timeout_s
        self._page_size = page_size
        self._tls_context: ssl.SSLContext | None = None
        #: INBOX as the last complete fetch or wait found it (see
        #: wait_for_change)
        self._inbox_seen: _Selected | None = None

    def __repr__(self) -> str:
        return (
            f"ImapMailbox({self.address!r}, imap={self.imap.host}:{self.imap.port}, "
            f"smtp={self.smtp.host}:{self.smtp.port})"
        )

    def _context(self, server: MailServer, protocol: str) -> ssl.SSLContext | None:
        """Raises ValidationFailed (plaintext off loopback), ConfigError (CA file)."""
        check_transport(server, protocol)
        if server.security is Security.NONE:
            return None
        if self._tls_context is None:  # one for both servers, made once
            self._tls_context = client_context(self._extra_ca_file)
        return self._tls_context

    async def _sign_in(self) -> SignIn:
        """The credentials for one connection (a fresh token where OAuth)."""
        if self._token is not None:
            return SignIn(self.username, await self._token(), oauth=True)
        assert self._password is not None  # noqa: S101 - checked in __init__
        return SignIn(self.username, self._password)

    async def _open(self) -> _Session:
        ctx = self._context(self.imap, "IMAP")
        sign_in = await self._sign_in()
        opening = asyncio.ensure_future(
            asyncio.to_thread(
                _Session.open,
                self.imap,
                sign_in,
                ctx,
                self._timeout_s,
            )
        )
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            # the worker thread signs in all the same: log out once it has
            await _close_after(opening)
            raise

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[_Session]:
        session = await self._open()
        try:
            yield session
        except asyncio.CancelledError:
            session.abort()  # a worker thread may still wait for the server
            raise
        finally:
            await asyncio.to_thread(session.close)

    # -- MailProvider

    async def fetch(
        self, cursor: str | None, *, since: dt.datetime
    ) -> AsyncGenerator[MailBatch, None]:
        """INBOX and Sent since ``cursor``; with None, every message since ``since``.

        One connection for the whole fetch, closed when the iteration ends or
        is abandoned. At most one page of messages is in memory at a time.

        Raises:
            CursorExpired: a folder's UIDVALIDITY changed, the Sent folder is
                gone, or the cursor is not readable: fetch again from None.
            AuthError: the server refused the password.
            TransientProviderError: the server could not be reached or failed
                for now.
            ProviderError: TLS failed, or the server refused a command.
        """
        known = _read_cursor(cursor) if cursor is not None else {}
        async with self._session() as session:
            plans = await asyncio.to_thread(session.plan, known, since)
            new_cursor = _write_cursor({p.folder: p.cursor for p in plans})
            inbox = plans[0].selected
            steps: list[tuple[_FolderPlan, int, bool]] = []
            for plan in plans:
                changes = max(len(plan.flags), len(plan.removed))
                steps += [
                    (plan, start, True)
                    for start in range(0, changes, MAX_CHANGES_PER_BATCH)
                ]
                steps += [
                    (plan, start, False)
                    for start in range(0, len(plan.new_uids), self._page_size)
                ]
            if not steps:
                self._inbox_seen = inbox
                yield MailBatch(cursor=new_cursor)
                return
            count = 0
            for index, (plan, start, is_changes) in enumerate(steps):
                last = index == len(steps) - 1
                if is_changes:
                    end = start + MAX_CHANGES_PER_BATCH
                    batch = MailBatch(
                        removed=tuple(plan.removed[start:end]),
                        flags=tuple(plan.flags[start:end]),
                    )
                else:
                    uids = plan.new_uids[start : start + self._page_size]
                    fetched = await asyncio.to_thread(session.messages, plan, uids)
                    # in a worker process: parsing overlaps with the caller
                    # storing the previous page
                    messages = await parse_page(fetched)
                    del fetched
                    count += len(messages)
                    batch = MailBatch(messages=tuple(messages))
                if last:
                    self._inbox_seen = inbox
                    _log.debug(
                        "fetched %d messages from %s (%s)",
                        count,
                        session.what,
                        "changes" if known else "since " + since.date().isoformat(),
                    )
                    batch = dataclasses.replace(batch, cursor=new_cursor)
                yield batch

    async def send(self, message: OutgoingMessage, raw: bytes) -> SentMessage:
        """Send ``raw`` by SMTP, then file a copy in the Sent folder.

        The envelope goes to every To, Cc and Bcc address; ``raw`` has no Bcc
        header. Most SMTP servers do not keep a copy of what they send, so
        ``raw`` is APPENDed to the Sent folder with ``\\Seen`` (a folder
        named "Sent" is created when the mailbox has none). The result's
        provider id is that copy's (``sent/<uidvalidity>/<uid>``) when the
        server reports it (UIDPLUS ``APPENDUID``), else None. A copy that
        cannot be saved is logged, not raised: the message went out, and
        sending again would duplicate it. Without ``save_sent_copy`` (the
        server files the copy itself) the provider id is None; the next fetch
        of Sent brings the copy, matched to the stored message by Message-ID.

        Raises:
            ValidationFailed: a recipient, the sender or the size was refused
                (nothing was sent), or a server would get the password
                unencrypted.
            AuthError: the SMTP server refused the password or access token.
            TransientProviderError, ProviderError: see :func:`_smtp.submit`.
        """
        smtp_ctx = self._context(self.smtp, "SMTP")
        self._context(self.imap, "IMAP")  # refuse before sending, not after
        sign_in = await self._sign_in()
        await submit(
            self.smtp,
            sign_in.username,
            sign_in.secret,
            oauth=sign_in.oauth,
            tls_context=smtp_ctx,
            timeout_s=self._timeout_s,
            message=message,
            raw=raw,
        )
        if not self._save_sent_copy:
            return SentMessage(provider_id=None)
        try:
            async with self._session() as session:
                provider_id = await asyncio.to_thread(session.file_copy, raw)
        except ProviderError as exc:
            _log.warning(
                "sent %s, but no copy could be saved in the Sent folder on %s: %s",
                message.message_id,
                self.imap.label("IMAP"),
                exc,
            )
            return SentMessage(provider_id=None)
        return SentMessage(provider_id=provider_id)

    async def mark_read(self, provider_id: str, is_read: bool) -> None:
        """Set or clear ``\\Seen`` on the message (``UID STORE``).

        Raises:
            ItemNotFound: the message (or its folder's UIDVALIDITY) is gone.
            AuthError, TransientProviderError, ProviderError: as for fetch.
        """
        folder, uidvalidity, uid = _parse_provider_id(provider_id)
        async with self._session() as session:
            await asyncio.to_thread(session.set_seen, folder, uidvalidity, uid, is_read)

    async def attachment(self, provider_id: str, attachment_id: str) -> bytes:
        """Not needed for IMAP: raises UnsupportedOperation."""
        raise UnsupportedOperation(
            "IMAP messages are fetched with the data of their attachments; there is "
            "no attachment to download separately."
        )

    # -- listener support

    @property
    def inbox_state(self) -> InboxState | None:
        """INBOX as the last complete fetch or wait found it (None: neither
        ran on this object)."""
        return self._inbox_seen

    def expect_inbox(self, state: InboxState | None) -> None:
        """Take ``state`` (another object's :attr:`inbox_state` for the same
        mailbox) as the baseline of the next :meth:`wait_for_change`; None
        changes nothing."""
        if state is not None:
            self._inbox_seen = state

    async def wait_for_change(
        self, timeout_s: float, *, executor: Executor | None = None
    ) -> bool:
        """Wait up to ``timeout_s`` seconds for INBOX to change (IMAP IDLE, RFC 2177).

        The wait blocks a thread: of ``executor`` when given (a listener
        holding many connections brings a pool of its own size, so it never
        takes the default pool's few threads), else of the default pool.

        True when the server reports a new, removed or changed message, or
        at once when INBOX already differs from what the last complete
        :meth:`fetch` or wait found, or the state given to :meth:`expect_inbox`
        (so mail that arrived between that fetch or wait and this call is not
        missed). False when the time ran out, or at once when the server does
        not offer IDLE (poll instead). IDLE is always ended with
        ``DONE`` and the connection logged out, also when the caller is
        cancelled (within about half a second).

        Raises:
            AuthError, TransientProviderError, ProviderError: as for fetch.
        """
        session = await self._open()
        stop = threading.Event()
        work = asyncio.ensure_future(
            asyncio.get_running_loop().run_in_executor(
                executor, session.wait, self._inbox_seen, timeout_s, stop
            )
        )
        try:
            changed, self._inbox_seen = await asyncio.shield(work)
            return changed
        except asyncio.CancelledError:
            stop.set()
            with contextlib.suppress(ProviderError):
                await work
            raise
        finally:
            await asyncio.to_thread(session.close)
