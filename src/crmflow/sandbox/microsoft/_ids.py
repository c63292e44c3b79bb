"""Opaque identifiers shaped like Exchange's: item ids, change keys, iCalUIds.

* Item ids are URL-safe base64 with padding, starting ``AAMk`` like Outlook's
  (``AAMkADJmNzI4…AAA=``, microsoft-graph.md §2.3: "Case-sensitive and
  read-only"). Occurrence ids are different from their master's id but decode
  back to (master id, original start), as Outlook's do.
* Change keys are standard base64 of 22 random bytes (``wgMLBV3JBEOnWI9UGI4kTQADJmgusw==``).
* ``iCalUId`` is a GlobalObjectId in hex: ``040000008200E00074C5B7101A82E008``,
  then four bytes year-high/year-low/month/day (zero on the master, the
  original date on an occurrence — "different for each occurrence"), then 40
  random hex digits.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import uuid
from datetime import UTC, datetime

__all__ = [
    "change_key",
    "ical_uid",
    "new_id",
    "occurrence_id",
    "split_occurrence_id",
]

#: base64 of these bytes starts "AAMk", like Outlook's item ids
_PREFIX = b"\x00\x03\x24"
_OCCURRENCE_MARK = b"\x07\x01"
_GLOBAL_OBJECT_ID = "040000008200E00074C5B7101A82E008"


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii")


def new_id() -> str:
    """Return a fresh item id (Outlook-looking, ``AAMk`` prefix, 152 characters)."""
    return _encode(_PREFIX + b"\x00" + secrets.token_bytes(108))


def change_key() -> str:
    """Return a fresh change key."""
    return base64.b64encode(secrets.token_bytes(22)).decode("ascii")


def occurrence_id(master_id: str, original_start: datetime) -> str:
    """Return the id of the occurrence of ``master_id`` originally at ``original_start``."""
    stamp = int(original_start.astimezone(UTC).timestamp()).to_bytes(
        8, "big", signed=True
    )
    return _encode(
        _PREFIX
        + b"\x01"
        + _OCCURRENCE_MARK
        + stamp
        + base64.urlsafe_b64decode(master_id)
    )


def split_occurrence_id(item_id: str) -> tuple[str, datetime] | None:
    """Return (master id, original start UTC) for an occurrence id, else None."""
    try:
        raw = base64.urlsafe_b64decode(item_id.encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None
    if not raw.startswith(_PREFIX + b"\x01" + _OCCURRENCE_MARK) or len(raw) < 14:
        return None
    stamp = int.from_bytes(raw[6:14], "big", signed=True)
    try:
        start = datetime.fromtimestamp(stamp, UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return _encode(raw[14:]), start


def ical_uid(seed: str | None = None, on: datetime | None = None) -> str:
    """Return a GlobalObjectId-style ``iCalUId``; ``on`` sets an occurrence's date bytes."""
    tail = seed or secrets.token_hex(20).upper()
    if on is None:
        date_bytes = "00000000"
    else:
        date_bytes = f"{on.year >> 8:02X}{on.year & 0xFF:02X}{on.month:02X}{on.day:02X}"
    return f"{_GLOBAL_OBJECT_ID}{date_bytes}{tail}"


def ical_tail(uid: str) -> str:
    """The random part of a GlobalObjectId (shared by a master and its occurrences)."""
    return uid[len(_GLOBAL_OBJECT_ID) + 8 :]


def object_id(email: str) -> str:
    """The stable Entra object id (``oid``, Graph ``user.id``) of a sandbox user."""
    return str(
        uuid.uuid5(uuid.NAMESPACE_URL, f"crmflow-sandbox:microsoft:user:{email}")
    )


def guid() -> str:
    """A random GUID string (subscription ids, request ids)."""
    return str(uuid.uuid4())
