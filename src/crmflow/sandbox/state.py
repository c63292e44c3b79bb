"""Sandbox state: users, clock, faults, request log and per-vendor extensions.

One :class:`SandboxState` backs every emulated vendor (Google today, Microsoft
later). It owns:

* ``lock`` — one re-entrant lock. Every read or write of sandbox data happens
  under it, so the ASGI handlers (one event loop), the control API, the demo
  seeder and test code calling Python methods from other threads never see a
  half-applied change. Critical sections are short and never ``await``.
* ``clock`` — sandbox time (real UTC time plus an offset tests can advance, to
  expire tokens without sleeping).
* ``users`` — the sandbox people, shared by every vendor.
* ``faults``, ``requests`` and ``quota`` — see :mod:`crmflow.sandbox.faults`,
  :mod:`crmflow.sandbox.requestlog` and :mod:`crmflow.sandbox.quota`.
* extensions — vendor data (``GoogleStore``), created on first use with
  :meth:`SandboxState.extension`.

State lives in memory. With ``persist_path`` it is also written to a SQLite file
(one JSON document per section) after every mutating request and on
:meth:`SandboxState.flush`, and read back at construction, so the demo survives
restarts. Faults and the request log are runtime-only and never persisted.
"""

from __future__ import annotations

import abc
import hashlib
import json
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import TypeAdapter

from crmflow.sandbox.faults import FaultPlan
from crmflow.sandbox.quota import QuotaMeter
from crmflow.sandbox.requestlog import RequestLog

__all__ = [
    "Clock",
    "SandboxConfig",
    "SandboxState",
    "SandboxUser",
    "StateExtension",
    "UnknownUser",
]


class UnknownUser(KeyError):
    """No sandbox user has this email address."""


class Clock:
    """Sandbox time: the real UTC clock plus an offset that only moves forward.

    Tests advance it (``POST {base}/_sandbox/clock``) to expire access tokens
    (3599 s), Testing-mode refresh tokens (7 days) or watch channels without
    sleeping.
    """

    def __init__(self) -> None:
        self._offset = timedelta(0)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        """Return the current sandbox time (aware, UTC)."""
        return datetime.now(UTC) + self._offset

    def now_ms(self) -> int:
        """Return the current sandbox time in milliseconds since the epoch."""
        return int(self.now().timestamp() * 1000)

    def advance(self, seconds: float) -> datetime:
        """Move sandbox time forward by ``seconds`` (>= 0) and return the new now.

        Raises:
            ValueError: for a negative ``seconds``; sandbox time never goes back,
                because etags, sync tokens and history ids depend on it.
        """
        if seconds < 0:
            raise ValueError("the sandbox clock only moves forward")
        with self._lock:
            self._offset += timedelta(seconds=seconds)
        return self.now()

    def back_to_real_time(self) -> None:
        """Drop the offset. Only for a state that holds nothing any more
        (right after :meth:`SandboxState.reset`, which keeps it): with no
        etag, sync token or history id left, nothing sees time go back. A
        test harness that shares one server among tests calls it so that
        each test's "now" is the real one, whatever earlier tests advanced."""
        with self._lock:
            self._offset = timedelta(0)

    @property
    def offset_s(self) -> float:
        """Seconds added to the real clock."""
        return self._offset.total_seconds()

    def restore_offset(self, offset_s: float) -> None:
        """Set the offset (used when loading a persisted state)."""
        with self._lock:
            self._offset = timedelta(seconds=max(offset_s, 0.0))


@dataclass
class SandboxUser:
    """A sandbox person, known to every emulated vendor."""

    #: lower-cased email address; the user's key everywhere
    email: str
    #: display name ("Ada Lovelace")
    name: str
    given_name: str
    family_name: str
    #: stable 21-digit account id, like Google's OpenID ``sub``
    sub: str


@dataclass
class SandboxConfig:
    """Behaviour switches that are not faults. Changed with ``PATCH {base}/_sandbox/config``."""

    #: Google requires HTTPS webhook addresses with a valid certificate
    #: (push guide); tests and the demo run plain-HTTP receivers on loopback,
    #: so they switch this on explicitly.
    allow_http_webhooks: bool = False
    #: first retry delay for push deliveries answered with 500/502/503/504;
    #: doubled on each attempt (Google "retries with exponential backoff").
    push_retry_base_s: float = 1.0
    #: deliveries attempted per notification before it counts as failed
    push_max_attempts: int = 5
    #: seconds to wait for a webhook receiver before counting the attempt failed
    push_timeout_s: float = 10.0
    #: API requests per minute per user and client (Calendar: 600); None = unlimited
    user_requests_per_minute: int | None = None
    #: API requests per minute per OAuth client (Calendar: 10,000); None = unlimited
    project_requests_per_minute: int | None = None


class StateExtension(abc.ABC):
    """Vendor data kept inside a :class:`SandboxState`.

    Subclasses set ``key`` (the persistence section name) and implement
    snapshot/restore/reset. They are created lazily by
    :meth:`SandboxState.extension` and must only be touched under
    ``state.lock``.
    """

    key: ClassVar[str]

    def __init__(self, state: SandboxState) -> None:
        self.state = state

    @abc.abstractmethod
    def snapshot(self) -> Any:
        """Return a JSON-serialisable copy of the extension's data."""

    @abc.abstractmethod
    def restore(self, data: Any) -> None:
        """Replace the extension's data with a :meth:`snapshot` result."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget all data (``POST {base}/_sandbox/reset``)."""

    def on_user_added(self, user: SandboxUser) -> None:  # noqa: B027 - optional hook
        """Hook: a user was added (create their calendar, mailbox, ...)."""


E = TypeVar("E", bound=StateExtension)

_USERS = TypeAdapter(dict[str, SandboxUser])
_CONFIG = TypeAdapter(SandboxConfig)


class _SnapshotFile:
    """A SQLite file holding one JSON text per state section."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # The connection is shared by the server's event loop thread and any
        # thread calling flush(); every use holds the state lock.
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS sandbox_state (section TEXT PRIMARY KEY, data TEXT NOT NULL)"
        )
        self._db.commit()

    def load(self) -> dict[str, Any]:
        rows = self._db.execute("SELECT section, data FROM sandbox_state").fetchall()
        return {str(section): json.loads(data) for section, data in rows}

    def save(self, sections: dict[str, Any]) -> None:
        with self._db:
            self._db.executemany(
                "INSERT INTO sandbox_state (section, data) VALUES (?, ?) "
                "ON CONFLICT(section) DO UPDATE SET data = excluded.data",
                [
                    (k, json.dumps(v, separators=(",", ":")))
                    for k, v in sections.items()
                ],
            )

    def close(self) -> None:
        self._db.close()


class SandboxState:
    """All sandbox data. Thread-safe through ``lock``; see the module docstring.

    Args:
        persist_path: optional SQLite file; loaded now, written by :meth:`flush`.
        config: behaviour switches; defaults are Google's real behaviour.
        seed: seeds the random generator used for fault rates and id gaps, so a
            test run is reproducible.
    """

    def __init__(
        self,
        *,
        persist_path: Path | None = None,
        config: SandboxConfig | None = None,
        seed: int | None = None,
    ) -> None:
        self.lock = threading.RLock()
        self.clock = Clock()
        self.config = config or SandboxConfig()
        self.users: dict[str, SandboxUser] = {}
        self.faults = FaultPlan(seed=seed)
        self.requests = RequestLog()
        self.quota = QuotaMeter()
        self._extensions: dict[str, StateExtension] = {}
        self._pending: dict[str, Any] = {}
        self._dirty = False
        self._file = _SnapshotFile(persist_path) if persist_path else None
        if self._file is not None:
            self._load(self._file.load())

    # -- extensions -------------------------------------------------------

    def extension(self, cls: type[E]) -> E:
        """Return the ``cls`` extension, creating (and restoring) it on first use."""
        with self.lock:
            ext = self._extensions.get(cls.key)
            if ext is None:
                ext = cls(self)
                if cls.key in self._pending:
                    ext.restore(self._pending.pop(cls.key))
                self._extensions[cls.key] = ext
            if not isinstance(ext, cls):  # pragma: no cover - two classes, one key
                raise TypeError(f"extension key {cls.key!r} is taken by {type(ext)!r}")
            return ext

    # -- users ------------------------------------------------------------

    def add_user(self, email: str, name: str | None = None) -> SandboxUser:
        """Create a user, or return the existing one with that email (idempotent).

        The email is lower-cased. A missing name is derived from the local part
        ("ada.lovelace" -> "Ada Lovelace").
        """
        key = email.strip().lower()
        if "@" not in key or key.startswith("@") or key.endswith("@"):
            raise ValueError(f"not an email address: {email!r}")
        with self.lock:
            existing = self.users.get(key)
            if existing is not None:
                return existing
            local = key.split("@", 1)[0]
            words = [
                w.capitalize()
                for w in local.replace("_", ".").replace("-", ".").split(".")
                if w
            ]
            display = name or " ".join(words) or local
            given, _, family = display.partition(" ")
            # Google's OpenID `sub` is a 21-digit decimal string; derive it from
            # the email so it is stable across restarts and persistence.
            digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:9], "big")
            user = SandboxUser(
                email=key,
                name=display,
                given_name=given,
                family_name=family,
                sub="1" + str(digest).rjust(20, "0")[-20:],
            )
            self.users[key] = user
            for ext in self._extensions.values():
                ext.on_user_added(user)
            self.mark_dirty()
            return user

    def user(self, email: str) -> SandboxUser:
        """Return the user with ``email``.

        Raises:
            UnknownUser: no such user.
        """
        key = email.strip().lower()
        with self.lock:
            found = self.users.get(key)
        if found is None:
            raise UnknownUser(key)
        return found

    # -- lifecycle ----------------------------------------------------------

    def reset(self) -> None:
        """Forget every user, all vendor data, faults and the request log.

        Config and the clock offset are kept (the clock never goes back).
        """
        with self.lock:
            self.users.clear()
            self._pending.clear()
            for ext in self._extensions.values():
                ext.reset()
            self.faults.clear()
            self.requests.clear()
            self.quota.clear()
            self.mark_dirty()

    def mark_dirty(self) -> None:
        """Note that persisted data changed; :meth:`flush` writes it."""
        self._dirty = True

    def flush(self) -> None:
        """Write the state to the SQLite file, if persistence is on and data changed."""
        if self._file is None:
            return
        with self.lock:
            if not self._dirty:
                return
            sections: dict[str, Any] = {
                "users": _USERS.dump_python(self.users, mode="json"),
                "config": _CONFIG.dump_python(self.config, mode="json"),
                "clock": {"offset_s": self.clock.offset_s},
            }
            sections.update(self._pending)
            for key, ext in self._extensions.items():
                sections[key] = ext.snapshot()
            self._file.save(sections)
            self._dirty = False

    def close(self) -> None:
        """Flush and close the SQLite file (no-op without persistence)."""
        self.flush()
        if self._file is not None:
            with self.lock:
                self._file.close()
                self._file = None

    def _load(self, sections: dict[str, Any]) -> None:
        with self.lock:
            if "users" in sections:
                self.users = _USERS.validate_python(sections.pop("users"))
            if "config" in sections:
                self.config = _CONFIG.validate_python(sections.pop("config"))
            if "clock" in sections:
                self.clock.restore_offset(float(sections.pop("clock")["offset_s"]))
            # Vendor sections wait until their extension is first used.
            self._pending = sections


def default_state_path(directory: Path) -> Path:
    """Return the conventional sandbox state file inside ``directory``."""
    return directory / "sandbox-state.sqlite3"
