"""Addresses as keys: linking messages and attendees to CRM contacts.

:func:`link_key` is the one normalization used on both sides of a link (the
contact's stored address and the address on a message or invitation), so the
two always agree. Its plus-addressing policy:

* A ``+tag`` is removed from the local part for **every** domain
  (``anna+crm@example.com`` links like ``anna@example.com``). Which character
  starts a subaddress depends on the provider and is not visible from outside
  (``+`` for Gmail, Microsoft 365, Fastmail, Postfix and Exim defaults; ``-``
  or ``=`` on a few self-hosted servers), and ``+`` is by far the most common
  one, so only ``+`` is recognized, everywhere. Two different people whose
  addresses differ only after a ``+`` are very rare, and such a false merge
  only attaches a message to the wrong contact's timeline: the key is never
  used to send mail, which always goes to the address as written.
* Dots are kept: Gmail ignores dots in the local part, other providers do not
  (``a.berg@`` and ``aberg@`` may be two people), and a Google Workspace
  domain cannot be recognized from its name.
* Case is folded for the whole address. RFC 5321 lets a server treat the
  local part as case-sensitive, but no common provider does.
"""

from __future__ import annotations

from crmflow.domain.emails import normalize_email
from crmflow.domain.mail import Address
from crmflow.errors import ValidationFailed

__all__ = ["format_address", "link_key"]

#: characters that would make ``Name <email>`` ambiguous to a reader
_NAME_SPECIALS = frozenset(',;<>@"\\')


def link_key(address: str) -> str | None:
    """The key linking ``address`` to a contact; None if it is not an address.

    Lower-cased, stripped (also of ``<>`` around it and a ``mailto:``), with a
    ``+tag`` removed from the local part (policy: module docstring).
    """
    value = address.strip()
    if value[:7].lower() == "mailto:":
        value = value[7:].strip()
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1].strip()
    try:
        value = normalize_email(value)
    except ValidationFailed:
        return None
    local, _, domain = value.rpartition("@")
    plus = local.find("+")
    if plus > 0:  # a local part that starts with "+" is not subaddressed
        local = local[:plus]
    return f"{local}@{domain}"


def format_address(address: Address) -> str:
    """``Name <email>`` for display (not for a header: nothing is encoded).

    The name is quoted when it holds a comma, semicolon, angle bracket, ``@``
    or quote (``"Berg, Anna" <anna@example.com>``); without a name, or when the name
    only repeats the address, the address alone.
    """
    name = " ".join(address.name.split())
    email = address.email.strip()
    if not name or name.strip("'\"").lower() == email.lower():
        return email
    if not _NAME_SPECIALS.isdisjoint(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{email}>"
