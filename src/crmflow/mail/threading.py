"""Which CRM thread a message belongs to.

The rule is a small part of Jamie Zawinski's threading algorithm ("JWZ-lite"):
threads follow Message-ID references only, never subjects (two mails called
"Invoice" are not one conversation, and a reply whose subject was edited still
is). In order:

1. The message itself or a message it refers to is already stored: its
   thread. Looked up in one call to ``known`` with, in this order, the
   message's own Message-ID (the same mail seen in a second mailbox, or the
   sent copy of a mail the CRM sent), its In-Reply-To, then its References
   from the newest to the oldest (the nearest ancestor wins), at most
   :data:`MAX_LOOKUP_IDS` ids in all, the References' root always among them.
2. The provider groups it (Gmail ``threadId``, Graph ``conversationId``):
   ``"p:" + provider_thread_id``.
3. None of its ancestors is stored yet (a reply fetched before the mail it
   answers): the oldest id of its References (the thread's root), else its
   In-Reply-To. Every message of a conversation names the same root, so
   they meet in one thread whatever order they arrive in; the root itself,
   arriving later, is keyed by its own id (next rule), which is that key.
4. Otherwise its own Message-ID.
5. Without any id at all: a new random key ``"g:…"``.

Keys are opaque strings: a Message-ID (``<…>``), ``p:…`` or ``g:…``; the three
forms cannot collide.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

__all__ = ["MAX_LOOKUP_IDS", "thread_key"]

#: References of a hostile message can be arbitrarily many; the lookup gets
#: the newest ones (and the root), which is where a known ancestor is
MAX_LOOKUP_IDS = 50


def _clean(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def thread_key(
    message_id: str | None,
    in_reply_to: str | None,
    references: tuple[str, ...],
    provider_thread_id: str | None,
    known: Callable[[tuple[str, ...]], str | None],
) -> str:
    """The thread key of a message (the rule is in the module docstring).

    ``known(ids)`` returns the thread key of a stored message whose
    Message-ID is among ``ids``; the ids come in order of preference and it
    should return the thread of the first one it knows. It is called at most
    once, never with an empty tuple.
    """
    own = _clean(message_id)
    parent = _clean(in_reply_to)
    refs = [ref for ref in (_clean(r) for r in references) if ref]
    candidates: list[str] = []
    newest_first = refs[::-1][: MAX_LOOKUP_IDS - 3]
    for ref in (own, parent, *newest_first, refs[0] if refs else None):
        if ref and ref not in candidates:
            candidates.append(ref)
    if candidates:
        found = known(tuple(candidates))
        if found:
            return found
    provider = _clean(provider_thread_id)
    if provider:
        return "p:" + provider
    root = refs[0] if refs else parent
    if root:
        return root
    if own:
        return own
    return "g:" + uuid.uuid4().hex
