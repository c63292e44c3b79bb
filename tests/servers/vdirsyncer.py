"""vdirsyncer (0.21 or newer) as a second, independent CalDAV client.

vdirsyncer syncs one CalDAV collection with a folder of ``.ics`` files (its
``filesystem`` storage). It runs as a subprocess of this environment: the
``vdirsyncer`` script next to ``sys.executable``, else ``python -m vdirsyncer``.
Recipe: ``real-servers.md`` §8, with ``collections = null`` so that the CalDAV
storage's URL is the collection itself and the folder holds its items directly
(nothing else of the account is discovered or synced).

* :func:`vdirsyncer_command`: how to run it (None when it is missing or older
  than :data:`MIN_VERSION`); :func:`require_vdirsyncer` skips locally and fails
  in CI (``CRMFLOW_REQUIRE_SERVERS=1``) when it is missing.
* :class:`Vdirsyncer`: writes the config into a directory of its own and runs
  ``discover`` (answering its "create the folder?" prompt with ``y``) and
  ``sync``, blocking or as an asyncio subprocess. Each run gives a
  :class:`VdirsyncerRun` with the exit code, the output and, parsed from its
  "Copying" / "Deleting" lines, the writes vdirsyncer made
  (:attr:`VdirsyncerRun.writes`).

Side *a* of the pair is the folder, side *b* the server (vdirsyncer's
``conflict_resolution = "b wins"`` keeps the server's version of an item
changed on both sides since its last sync).
"""

from __future__ import annotations

import asyncio
import enum
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.servers.require import missing_server

__all__ = [
    "LOCAL",
    "MIN_VERSION",
    "REMOTE",
    "VdirWrite",
    "VdirWriteKind",
    "Vdirsyncer",
    "VdirsyncerError",
    "VdirsyncerRun",
    "Winner",
    "require_vdirsyncer",
    "vdirsyncer_command",
]

#: the oldest release used (asyncio storages, ``collections = null`` pairs)
MIN_VERSION = (0, 21)
#: the most one vdirsyncer run may take, in seconds (1,000 events: a few seconds)
RUN_TIMEOUT_S = 300.0
#: the pair's name in the generated config
PAIR = "crm"
#: the storages' names in the generated config and in vdirsyncer's output
LOCAL = "crm_local"
REMOTE = "crm_remote"
#: answers to ``discover``'s prompts ("Should vdirsyncer attempt to create it?")
_YES = b"y\n" * 4


class Winner(enum.StrEnum):
    """vdirsyncer's ``conflict_resolution`` for an item changed on both sides."""

    #: side *a*, the local folder
    LOCAL = "a wins"
    #: side *b*, the CalDAV server
    SERVER = "b wins"


class VdirWriteKind(enum.StrEnum):
    """What a write of vdirsyncer did to an item."""

    UPLOAD = "upload"
    UPDATE = "update"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class VdirWrite:
    """One write vdirsyncer reported."""

    kind: VdirWriteKind
    #: the item's UID
    ident: str
    #: the storage written: :data:`LOCAL` or :data:`REMOTE`
    storage: str


# vdirsyncer/sync/__init__.py: the INFO lines of Upload, Update, Delete and
# ResolveConflict
_COPYING = re.compile(
    r"^Copying \((?P<how>uploading|updating)\) item (?P<ident>.+) to (?P<storage>\S+)$"
)
_DELETING = re.compile(r"^Deleting item (?P<ident>.+) from (?P<storage>\S+)$")
_CONFLICT = re.compile(r"^Doing conflict resolution for item (?P<ident>.+)\.\.\.$")


class VdirsyncerError(RuntimeError):
    """A vdirsyncer run exited with an error, or did not finish in time."""


def _version_tuple(version: str) -> tuple[int, ...]:
    parts: list[int] = []
    for part in version.split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def vdirsyncer_command() -> list[str] | None:
    """The command that runs this environment's vdirsyncer, or None when the
    environment has none (or one older than :data:`MIN_VERSION`)."""
    try:
        version = importlib.metadata.version("vdirsyncer")
    except importlib.metadata.PackageNotFoundError:
        return None
    if _version_tuple(version) < MIN_VERSION:
        return None
    script = Path(sys.executable).with_name("vdirsyncer")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "vdirsyncer"]


def require_vdirsyncer() -> list[str]:
    """:func:`vdirsyncer_command`; skips the test locally and fails it in CI
    when vdirsyncer is missing (:func:`tests.servers.require.missing_server`)."""
    command = vdirsyncer_command()
    if command is None:
        minimum = ".".join(map(str, MIN_VERSION))
        missing_server(
            f"vdirsyncer >= {minimum} is not installed "
            f"(uv pip install 'vdirsyncer>={minimum}')"
        )
        raise AssertionError("unreachable: missing_server skips or fails")
    return command


@dataclass(frozen=True, slots=True)
class VdirsyncerRun:
    """One finished vdirsyncer command."""

    #: ``discover`` or ``sync``
    command: str
    returncode: int
    #: stdout and stderr, interleaved
    output: str
    #: wall-clock time of the subprocess, in seconds
    duration_s: float

    @property
    def writes(self) -> frozenset[VdirWrite]:
        """Every write vdirsyncer reported (one ``Copying ...`` or ``Deleting
        ...`` line each)."""
        found = set()
        for line in self.output.splitlines():
            copied = _COPYING.match(line.strip())
            if copied is not None:
                kind = (
                    VdirWriteKind.UPLOAD
                    if copied["how"] == "uploading"
                    else VdirWriteKind.UPDATE
                )
                found.add(VdirWrite(kind, copied["ident"], copied["storage"]))
            deleted = _DELETING.match(line.strip())
            if deleted is not None:
                found.add(
                    VdirWrite(
                        VdirWriteKind.DELETE, deleted["ident"], deleted["storage"]
                    )
                )
        return frozenset(found)

    def conflicts(self) -> frozenset[str]:
        """The idents vdirsyncer found changed on both sides (and resolved)."""
        return frozenset(
            match["ident"]
            for line in self.output.splitlines()
            if (match := _CONFLICT.match(line.strip())) is not None
        )


class Vdirsyncer:
    """A vdirsyncer pair of one CalDAV collection and a local folder.

    Args:
        base: an empty directory for the config, the status and the folder.
        collection_url: the collection's absolute URL.
        username, password: HTTP Basic credentials (written to the config file
            in ``base``: test accounts only).
        winner: vdirsyncer's conflict resolution.
        command: how to run vdirsyncer (default: :func:`vdirsyncer_command`).
    """

    def __init__(
        self,
        base: Path,
        collection_url: str,
        username: str,
        password: str,
        *,
        winner: Winner = Winner.SERVER,
        command: Sequence[str] | None = None,
    ) -> None:
        found = list(command) if command is not None else vdirsyncer_command()
        if not found:
            raise VdirsyncerError("vdirsyncer is not installed")
        self.command = found
        self.base = base
        #: the local collection: one ``.ics`` file per item
        self.folder = base / "calendar"
        self.config = base / "config"
        (base / "status").mkdir(parents=True, exist_ok=True)
        # vdirsyncer's config values are JSON
        self.config.write_text(
            f"""\
[general]
status_path = {json.dumps(str(base / "status") + "/")}

[pair {PAIR}]
a = "{LOCAL}"
b = "{REMOTE}"
collections = null
conflict_resolution = {json.dumps(str(winner))}

[storage {LOCAL}]
type = "filesystem"
path = {json.dumps(str(self.folder) + "/")}
fileext = ".ics"

[storage {REMOTE}]
type = "caldav"
url = {json.dumps(collection_url)}
username = {json.dumps(username)}
password = {json.dumps(password)}
""",
            encoding="utf-8",
        )

    def ics_files(self) -> list[Path]:
        """The local items, sorted by name."""
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if p.suffix == ".ics")

    def _argv(self, *args: str) -> list[str]:
        return [*self.command, "-c", str(self.config), *args]

    def _env(self) -> dict[str, str]:
        # the generated config only, whatever the environment names
        env = dict(os.environ)
        env.pop("VDIRSYNCER_CONFIG", None)
        return env

    def _finish(
        self, name: str, returncode: int, output: bytes, started: float, check: bool
    ) -> VdirsyncerRun:
        run = VdirsyncerRun(
            name,
            returncode,
            output.decode("utf-8", "replace"),
            time.perf_counter() - started,
        )
        if check and returncode != 0:
            raise VdirsyncerError(
                f"vdirsyncer {name} exited with {returncode}:\n{run.output}"
            )
        return run

    def _run(
        self, name: str, args: list[str], stdin: bytes, check: bool
    ) -> VdirsyncerRun:
        started = time.perf_counter()
        try:
            done = subprocess.run(
                self._argv(*args),
                input=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=self._env(),
                timeout=RUN_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            # subprocess.run has killed the child it started
            raise VdirsyncerError(
                f"vdirsyncer {name} took longer than {RUN_TIMEOUT_S} s"
            ) from exc
        return self._finish(name, done.returncode, done.stdout, started, check)

    async def _run_async(
        self, name: str, args: list[str], stdin: bytes, check: bool
    ) -> VdirsyncerRun:
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            *self._argv(*args),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self._env(),
        )
        try:
            output, _ = await asyncio.wait_for(
                process.communicate(stdin), RUN_TIMEOUT_S
            )
        except TimeoutError:
            process.kill()  # the child this call started, by its pid
            await process.wait()
            raise VdirsyncerError(
                f"vdirsyncer {name} took longer than {RUN_TIMEOUT_S} s"
            ) from None
        assert process.returncode is not None
        return self._finish(name, process.returncode, output, started, check)

    def discover(self, *, check: bool = True) -> VdirsyncerRun:
        """``vdirsyncer discover``: records the pair and creates the folder."""
        return self._run("discover", ["discover", PAIR], _YES, check)

    def sync(self, *, check: bool = True) -> VdirsyncerRun:
        """``vdirsyncer sync`` (blocking)."""
        return self._run("sync", ["sync", PAIR], b"", check)

    async def discover_async(self, *, check: bool = True) -> VdirsyncerRun:
        """:meth:`discover` as an asyncio subprocess."""
        return await self._run_async("discover", ["discover", PAIR], _YES, check)

    async def sync_async(self, *, check: bool = True) -> VdirsyncerRun:
        """:meth:`sync` as an asyncio subprocess (runs concurrently with the
        caller's other tasks)."""
        return await self._run_async("sync", ["sync", PAIR], b"", check)
