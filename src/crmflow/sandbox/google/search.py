"""A subset of Gmail's search syntax for ``messages.list?q=`` / ``threads.list?q=``.

Supported (Gmail "Refine searches" operators): ``from:`` ``to:`` ``cc:``
``bcc:`` ``subject:`` ``label:`` ``in:`` (inbox, sent, trash, spam, starred,
anywhere) ``is:`` (unread, read, starred, important) ``has:attachment``
``filename:`` ``rfc822msgid:`` ``after:`` ``before:`` ``older:`` ``newer:``
``older_than:`` ``newer_than:`` (``Nd``/``Nm``/``Ny``), quoted phrases,
``(grouped words)`` after an operator, ``-`` negation and bare words (matched
against subject, body and addresses). ``OR``, ``{}`` and size operators are not
supported: a term using them matches as plain text.

Dates: Gmail reads ``after:2004/04/16`` as midnight Pacific time ("To specify
accurate dates for other timezones pass the value in seconds instead"), so
dates are taken in America/Los_Angeles and integers as epoch seconds.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

__all__ = ["MessageFacts", "SearchTerm", "compile_query", "mentions_spam_or_trash"]

_PACIFIC = ZoneInfo("America/Los_Angeles")
_TOKEN = re.compile(r'(-?)(?:([A-Za-z_0-9]+):)?("[^"]*"|\([^)]*\)|\S+)')


@dataclass(frozen=True)
class MessageFacts:
    """What a query can test about one message (lower-cased text)."""

    sender: str
    recipients_to: str
    recipients_cc: str
    recipients_bcc: str
    subject: str
    body: str
    label_ids: frozenset[str]
    #: label names (lower-case) of user labels on the message
    label_names: frozenset[str]
    internal_date_ms: int
    message_id_header: str
    attachment_names: tuple[str, ...]


@dataclass(frozen=True)
class SearchTerm:
    """One parsed term."""

    negated: bool
    operator: str | None
    value: str
    test: Callable[[MessageFacts], bool]


def _date_ms(value: str, *, end_of_day: bool = False) -> int | None:
    if value.isdigit():
        return int(value) * 1000
    m = re.fullmatch(r"(\d{4})[/-](\d{1,2})[/-](\d{1,2})", value)
    if m is None:
        return None
    try:
        day = datetime(
            int(m.group(1)), int(m.group(2)), int(m.group(3)), tzinfo=_PACIFIC
        )
        if end_of_day:
            day += timedelta(days=1)
    except (ValueError, OverflowError):
        # Not a calendar date (2024/13/45): searched as text like other
        # values the sandbox cannot read as an operator argument.
        return None
    return int(day.timestamp() * 1000)


def _relative_ms(value: str, now_ms: int) -> int | None:
    m = re.fullmatch(r"(\d+)([dmy])", value.lower())
    if m is None:
        return None
    days = int(m.group(1)) * {"d": 1, "m": 30, "y": 365}[m.group(2)]
    return now_ms - days * 86_400_000


def _contains(
    field: Callable[[MessageFacts], str], needle: str
) -> Callable[[MessageFacts], bool]:
    words = needle.lower().split()
    return lambda f: all(w in field(f) for w in words)


def _time_test(bound: int, *, newer: bool) -> Callable[[MessageFacts], bool]:
    if newer:
        return lambda f: f.internal_date_ms >= bound
    return lambda f: f.internal_date_ms < bound


def _term(
    operator: str | None, value: str, now_ms: int
) -> Callable[[MessageFacts], bool]:
    op = (operator or "").lower()
    v = value.lower()
    if op == "from":
        return _contains(lambda f: f.sender, v)
    if op == "to":
        return _contains(
            lambda f: f.recipients_to + " " + f.recipients_cc + " " + f.recipients_bcc,
            v,
        )
    if op == "cc":
        return _contains(lambda f: f.recipients_cc, v)
    if op == "bcc":
        return _contains(lambda f: f.recipients_bcc, v)
    if op == "subject":
        return _contains(lambda f: f.subject, v)
    if op == "label":
        norm = v.replace("-", " ").replace("/", " ")
        return lambda f: (
            v.upper() in f.label_ids
            or any(n.replace("-", " ").replace("/", " ") == norm for n in f.label_names)
        )
    if op == "in":
        if v == "anywhere":
            return lambda f: True
        return lambda f: v.upper() in f.label_ids
    if op == "is":
        if v == "read":
            return lambda f: "UNREAD" not in f.label_ids
        return lambda f: v.upper() in f.label_ids
    if op == "has" and v == "attachment":
        return lambda f: bool(f.attachment_names)
    if op == "filename":
        return lambda f: any(v in name.lower() for name in f.attachment_names)
    if op == "rfc822msgid":
        target = v.strip("<>")
        return lambda f: f.message_id_header.strip("<>") == target
    if op in ("after", "newer", "before", "older", "newer_than", "older_than"):
        bound = _relative_ms(v, now_ms) if op.endswith("_than") else _date_ms(v)
        if bound is not None:
            return _time_test(bound, newer=op in ("after", "newer", "newer_than"))
    text = f"{operator}:{value}" if operator else value
    return _contains(
        lambda f: " ".join(
            (f.subject, f.body, f.sender, f.recipients_to, f.recipients_cc)
        ),
        text.lower(),
    )


def compile_query(q: str, now_ms: int) -> list[SearchTerm]:
    """Parse ``q`` into terms; a message matches when every term matches."""
    terms: list[SearchTerm] = []
    for negated, operator, raw in _TOKEN.findall(q):
        value = raw
        if (value.startswith('"') and value.endswith('"')) or (
            value.startswith("(") and value.endswith(")")
        ):
            value = value[1:-1]
        if not value:
            continue
        terms.append(
            SearchTerm(
                bool(negated),
                operator or None,
                value,
                _term(operator or None, value, now_ms),
            )
        )
    return terms


def matches(terms: list[SearchTerm], facts: MessageFacts) -> bool:
    """True when ``facts`` satisfies every term."""
    return all(term.test(facts) != term.negated for term in terms)


def mentions_spam_or_trash(terms: list[SearchTerm]) -> bool:
    """True when the query itself asks for SPAM/TRASH (so they are not excluded)."""
    return any(
        not t.negated
        and (t.operator or "").lower() in ("in", "label")
        and t.value.lower() in ("spam", "trash", "anywhere")
        for t in terms
    )
