"""OData query options the sandbox honours: ``$top``, ``$skip``, ``$select``, ``$filter``, ``$expand``, ``$orderby``, ``Prefer``.

* Paging (microsoft-graph.md §2.1, §7.2): default page size 10, ``$top`` 1-1000
  (larger values are capped at 1000), ``@odata.nextLink`` carries ``$skip``
  (calendarView's link is opaque in the docs; the sandbox uses ``$skip`` too).
* ``$filter``: a small OData subset — ``eq ne gt ge lt le``, ``and``/``or``,
  ``not``, parentheses, ``contains``/``startswith``, and ``any`` lambdas over
  collections, which is what extended-property lookups need::

      singleValueExtendedProperties/Any(ep: ep/id eq 'String {guid} Name CrmId' and ep/value eq '42')

  String comparisons are case-insensitive (Exchange), except the ``Name`` part
  of an extended property id, which is case-sensitive
  (extended-properties-overview.md). Anything else is 400
  ``ErrorInvalidUrlQueryFilter``.
* ``Prefer`` is a comma-separated list; ``odata.maxpagesize=N``,
  ``outlook.timezone="…"``, ``outlook.body-content-type="text"``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from crmflow.sandbox.microsoft.errors import GraphError

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "Filter",
    "Query",
    "extended_id_equal",
    "parse_filter",
    "parse_prefer",
]

DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 1000

Resolver = Callable[[str], Any]


def _bad_filter() -> GraphError:
    return GraphError(
        400,
        "ErrorInvalidUrlQueryFilter",
        "The query filter contains one or more invalid nodes.",
    )


def parse_prefer(values: list[str]) -> list[str]:
    """Split ``Prefer`` header values into items (``name=value`` strings)."""
    items: list[str] = []
    for value in values:
        items.extend(
            part.strip()
            for part in re.split(r",(?=(?:[^\"]*\"[^\"]*\")*[^\"]*$)", value)
            if part.strip()
        )
    return items


def prefer_value(items: list[str], name: str) -> str | None:
    """The value of preference ``name`` (quotes removed), if present."""
    for item in items:
        key, _, value = item.partition("=")
        if key.strip().casefold() == name.casefold():
            return value.strip().strip('"')
    return None


@dataclass(frozen=True)
class Query:
    """Parsed query options of one request."""

    params: Mapping[str, str]
    top: int | None
    skip: int
    select: frozenset[str] | None
    filter: str | None
    orderby: str | None
    expand: str | None

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> Query:
        """Parse ``$top`` / ``$skip`` / ``$select`` / ``$filter`` / ``$orderby`` / ``$expand``.

        Raises:
            GraphError: 400 for a non-numeric ``$top``/``$skip``.
        """
        top = _int_option(params, "$top")
        if top is not None:
            top = max(1, min(top, MAX_PAGE_SIZE))
        select_raw = params.get("$select")
        select = (
            frozenset(s.strip() for s in select_raw.split(",") if s.strip())
            if select_raw
            else None
        )
        return cls(
            params=params,
            top=top,
            skip=_int_option(params, "$skip") or 0,
            select=select,
            filter=params.get("$filter"),
            orderby=params.get("$orderby"),
            expand=params.get("$expand"),
        )


def _int_option(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError as exc:
        raise GraphError(
            400, "BadRequest", f"Invalid value '{raw}' for query option '{name}'."
        ) from exc
    if value < 0:
        raise GraphError(
            400, "BadRequest", f"Invalid value '{raw}' for query option '{name}'."
        )
    return value


def next_link(url: str, params: Mapping[str, str], skip: int) -> str:
    """``url`` with the same query and ``$skip`` set."""
    query = {k: v for k, v in params.items() if k != "$skip"}
    query["$skip"] = str(skip)
    encoded = urlencode(query, safe="$:,()/'", quote_via=quote)
    return f"{url}?{encoded}"


def check_select(
    select: frozenset[str] | None, known: frozenset[str], type_name: str
) -> None:
    """400 ``RequestBroker--ParseUri`` for a ``$select`` of an unknown property."""
    if select is None:
        return
    for name in select:
        if name not in known:
            raise GraphError(
                400,
                "RequestBroker--ParseUri",
                f"Could not find a property named '{name}' on type '{type_name}'.",
            )


def extended_id_equal(stored: str, wanted: str) -> bool:
    """Compare extended property ids: type and GUID case-insensitively, the ``Name`` exactly."""
    a = " ".join(stored.split())
    b = " ".join(wanted.split())
    a_head, a_sep, a_name = a.partition(" Name ")
    b_head, b_sep, b_name = b.partition(" Name ")
    if a_sep != b_sep:
        return False
    if a_sep:
        return a_head.casefold() == b_head.casefold() and a_name == b_name
    return a.casefold() == b.casefold()


# -- $filter ---------------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<punct>[():,])|(?P<word>[A-Za-z_@][\w./@-]*(?:\(\))?)|(?P<num>-?\d[\w:.+-]*))"
)
_OPS = {"eq", "ne", "gt", "ge", "lt", "le"}


@dataclass
class Filter:
    """A compiled ``$filter``: call with a resolver (path -> value)."""

    predicate: Callable[[Resolver], bool]

    def __call__(self, resolve: Resolver) -> bool:
        return self.predicate(resolve)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise _bad_filter()
        kind = match.lastgroup or ""
        out.append((kind, match.group(kind)))
        pos = match.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise _bad_filter()
        self.i += 1
        return tok

    def expect(self, value: str) -> None:
        if self.take()[1].casefold() != value.casefold():
            raise _bad_filter()

    def parse(self) -> Callable[[Resolver], bool]:
        pred = self.expr()
        if self.peek() is not None:
            raise _bad_filter()
        return pred

    def expr(self) -> Callable[[Resolver], bool]:
        left = self.conj()
        while (tok := self.peek()) is not None and tok[1].casefold() == "or":
            self.take()
            right = self.conj()
            left = _or(left, right)
        return left

    def conj(self) -> Callable[[Resolver], bool]:
        left = self.unary()
        while (tok := self.peek()) is not None and tok[1].casefold() == "and":
            self.take()
            right = self.unary()
            left = _and(left, right)
        return left

    def unary(self) -> Callable[[Resolver], bool]:
        tok = self.peek()
        if tok is not None and tok[1].casefold() == "not":
            self.take()
            inner = self.unary()
            return lambda r: not inner(r)
        if tok is not None and tok[1] == "(":
            self.take()
            inner = self.expr()
            self.expect(")")
            return inner
        return self.comparison()

    def comparison(self) -> Callable[[Resolver], bool]:
        kind, word = self.take()
        if kind != "word":
            raise _bad_filter()
        low = word.casefold()
        if low in {"contains", "startswith", "endswith"}:
            self.expect("(")
            path = self.take()
            self.expect(",")
            literal = _literal(self.take())
            self.expect(")")
            return _func(low, path[1], literal)
        if low.endswith("/any") and self.peek() == ("punct", "("):
            return self.lambda_any(word[: -len("/any")])
        _kind, op = self.take()
        if op.casefold() not in _OPS:
            raise _bad_filter()
        literal = _literal(self.take())
        return _compare(word, op.casefold(), literal)

    def lambda_any(self, collection: str) -> Callable[[Resolver], bool]:
        self.expect("(")
        kind, var = self.take()
        if kind != "word":
            raise _bad_filter()
        self.expect(":")
        inner = self.expr()
        self.expect(")")
        prefix = var + "/"

        def check(resolve: Resolver) -> bool:
            items = resolve(collection)
            if not isinstance(items, list):
                return False
            for item in items:

                def sub(path: str, item: Any = item) -> Any:
                    if path.startswith(prefix):
                        return _walk(item, path[len(prefix) :])
                    return resolve(path)

                if inner(sub):
                    return True
            return False

        return check


def _walk(item: Any, path: str) -> Any:
    value = item
    for part in path.split("/"):
        if isinstance(value, dict):
            value = next(
                (v for k, v in value.items() if k.casefold() == part.casefold()), None
            )
        else:
            return None
    return value


def _literal(tok: tuple[str, str]) -> Any:
    kind, text = tok
    if kind == "str":
        return text[1:-1].replace("''", "'")
    if kind == "word" and text.casefold() in {"true", "false"}:
        return text.casefold() == "true"
    if kind == "word" and text.casefold() == "null":
        return None
    if kind == "num":
        if re.fullmatch(r"-?\d+", text):
            return int(text)
        parsed = _as_datetime(text)
        if parsed is not None:
            return parsed
        return text
    raise _bad_filter()


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not re.match(r"^\d{4}-\d{2}-\d{2}T", value):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        from datetime import UTC

        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _norm(value: Any) -> Any:
    parsed = _as_datetime(value)
    if parsed is not None:
        return parsed
    if isinstance(value, str):
        return value.casefold()
    return value


def _compare(path: str, op: str, literal: Any) -> Callable[[Resolver], bool]:
    id_compare = (
        path.casefold().endswith("/id") and isinstance(literal, str) and "{" in literal
    )

    def check(resolve: Resolver) -> bool:
        value = resolve(path)
        if id_compare and isinstance(value, str):
            equal = extended_id_equal(value, literal)
            return equal if op == "eq" else (not equal if op == "ne" else False)
        left, right = _norm(value), _norm(literal)
        if op == "eq":
            return bool(left == right)
        if op == "ne":
            return bool(left != right)
        if left is None or right is None:
            return False
        try:
            if op == "gt":
                return bool(left > right)
            if op == "ge":
                return bool(left >= right)
            if op == "lt":
                return bool(left < right)
            return bool(left <= right)
        except TypeError as exc:
            raise _bad_filter() from exc

    return check


def _func(name: str, path: str, literal: Any) -> Callable[[Resolver], bool]:
    needle = str(literal).casefold()

    def check(resolve: Resolver) -> bool:
        value = resolve(path)
        if not isinstance(value, str):
            return False
        hay = value.casefold()
        if name == "contains":
            return needle in hay
        if name == "startswith":
            return hay.startswith(needle)
        return hay.endswith(needle)

    return check


def _and(
    a: Callable[[Resolver], bool], b: Callable[[Resolver], bool]
) -> Callable[[Resolver], bool]:
    return lambda r: a(r) and b(r)


def _or(
    a: Callable[[Resolver], bool], b: Callable[[Resolver], bool]
) -> Callable[[Resolver], bool]:
    return lambda r: a(r) or b(r)


def parse_filter(text: str) -> Filter:
    """Compile a ``$filter`` expression.

    Raises:
        GraphError: 400 ``ErrorInvalidUrlQueryFilter`` for unsupported syntax.
    """
    return Filter(_Parser(text).parse())


_EXPAND_EXTENDED = re.compile(
    r"^singleValueExtendedProperties(?:\(\$filter=(?P<filter>.*)\))?$", re.IGNORECASE
)


def parse_expand_extended(expand: str | None) -> frozenset[str] | None:
    """``$expand=singleValueExtendedProperties($filter=id eq '…' or id eq '…')`` -> ids.

    Returns None when not expanded, an empty set for "all".

    Raises:
        GraphError: 400 for another ``$expand``.
    """
    if not expand:
        return None
    match = _EXPAND_EXTENDED.match(expand.strip())
    if not match:
        raise GraphError(
            400,
            "BadRequest",
            f"Parsing OData Select and Expand failed: Could not find a property named '{expand}'.",
        )
    text = match.group("filter")
    if not text:
        return frozenset()
    ids = re.findall(r"id\s+eq\s+'((?:[^']|'')*)'", text, re.IGNORECASE)
    if not ids:
        raise _bad_filter()
    return frozenset(" ".join(i.replace("''", "'").split()) for i in ids)
