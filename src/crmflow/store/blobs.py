"""The blob store: attachment content on the filesystem, by SHA-256.

Layout: ``<root>/<organization id>/<first two hex digits>/<sha256>``. Content
is addressed by its hash within an organization, so the same file received
twice is stored once, and one organization's files never share a path with
another's. Who may read a blob is decided by the ``email_attachments`` row that
names it (row level security on PostgreSQL); the store itself checks only that
a key is well-formed, so a key from a request can never reach outside the
root.

Writes go to a temporary file in the same directory, are flushed to disk and
then renamed into place: a crash leaves either the whole blob or none.
Reads stream in chunks (:meth:`BlobStore.stream`) so a large attachment never
sits in memory whole.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from crmflow.errors import NotFound

#: bytes per read when streaming a blob out
CHUNK = 64 * 1024

_KEY = re.compile(r"^[0-9a-f-]{36}/[0-9a-f]{2}/[0-9a-f]{64}$")
_ORG = re.compile(r"^[0-9a-f-]{36}$")


class BlobStore:
    """Content-addressed files under ``root``."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def _path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise NotFound("No such attachment.")
        return self._root / key

    @staticmethod
    def key_for(organization_id: uuid.UUID, sha256: str) -> str:
        return f"{organization_id}/{sha256[:2]}/{sha256}"

    def address(self, organization_id: uuid.UUID, data: bytes) -> tuple[str, str]:
        """``(key, sha256)`` under which ``data`` is (or will be) stored."""
        digest = hashlib.sha256(data).hexdigest()
        return self.key_for(organization_id, digest), digest

    def put(self, organization_id: uuid.UUID, data: bytes) -> tuple[str, str]:
        """Store ``data``; returns ``(key, sha256)``. Idempotent."""
        key, digest = self.address(organization_id, data)
        self.write(key, data)
        return key, digest

    def write_all(self, blobs: list[tuple[str, bytes]]) -> None:
        """Store each ``(key, data)`` (keys from :meth:`address`)."""
        for key, data in blobs:
            self.write(key, data)

    def write(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` (from :meth:`address`); idempotent."""
        path = self._path(key)
        if path.exists():
            # fresh again: the orphan sweep leaves young files alone, and a
            # row about to name this file must not lose it to a sweep
            os.utime(path)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise NotFound("The attachment's content is missing.") from None

    def stream(self, key: str) -> Iterator[bytes]:
        """The blob's bytes in chunks of :data:`CHUNK`.

        Raises:
            NotFound: malformed key, or no such blob.
        """
        path = self._path(key)
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise NotFound("The attachment's content is missing.") from None
        with handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    def read(self, key: str) -> bytes:
        """The whole blob (for attachments being re-sent, within send limits)."""
        return b"".join(self.stream(key))

    def organizations(self) -> list[str]:
        """The organization ids that have a directory in the store."""
        if not self._root.is_dir():
            return []
        return sorted(p.name for p in self._root.iterdir() if _ORG.match(p.name))

    def files_of(self, organization: str, *, older_than_s: float) -> Iterator[str]:
        """Keys of one organization's blobs last written more than
        ``older_than_s`` ago, and the names (relative to the root) of its
        temporary files of that age (a write cut off by a crash)."""
        cutoff = time.time() - older_than_s
        base = self._root / organization
        for shard in sorted(base.iterdir()) if base.is_dir() else []:
            if not shard.is_dir():
                continue
            for path in shard.iterdir():
                try:
                    if path.stat().st_mtime >= cutoff:
                        continue
                except FileNotFoundError:
                    continue
                yield f"{organization}/{shard.name}/{path.name}"

    def remove(self, name: str, *, older_than_s: float) -> bool:
        """Delete a blob or a temporary file named by :meth:`files_of` if it
        is still older than ``older_than_s`` (not written again meanwhile);
        whether it was deleted."""
        parts = name.split("/")
        if not (
            _KEY.match(name)
            or (
                len(parts) == 3
                and _ORG.match(parts[0])
                and re.fullmatch(r"[0-9a-f]{2}", parts[1])
                and parts[2].startswith(".tmp-")
            )
        ):
            raise NotFound("No such attachment.")
        path = self._root / name
        try:
            if path.stat().st_mtime >= time.time() - older_than_s:
                return False
            path.unlink()
        except FileNotFoundError:
            return False
        return True
