"""Google's partial-response ``fields`` parameter.

Syntax (Google "Performance tips" / partial response): a comma-separated list
of field paths; ``a/b`` selects ``b`` inside ``a``; ``a(b,c)`` selects several
sub-fields of ``a``; ``*`` selects everything at one level. Arrays apply the
selection to each element.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FieldsError", "apply_fields", "parse_fields"]

#: selection tree: name -> sub-selection; an empty dict selects the whole value
Selection = dict[str, "Selection"]


class FieldsError(ValueError):
    """The ``fields`` value does not parse (Google: 400 "Invalid field selection")."""


def parse_fields(text: str) -> Selection:
    """Parse a ``fields`` value into a selection tree.

    Raises:
        FieldsError: unbalanced parentheses or empty names.
    """
    tree, pos = _parse_list(text.replace(" ", ""), 0)
    if pos != len(text.replace(" ", "")):
        raise FieldsError(text)
    return tree


def _parse_list(text: str, pos: int) -> tuple[Selection, int]:
    tree: Selection = {}
    while True:
        pos = _parse_path(text, pos, tree)
        if pos < len(text) and text[pos] == ",":
            pos += 1
            continue
        return tree, pos


def _parse_path(text: str, pos: int, tree: Selection) -> int:
    start = pos
    while pos < len(text) and text[pos] not in ",()/":
        pos += 1
    name = text[start:pos]
    if not name:
        raise FieldsError(text)
    node = tree.setdefault(name, {})
    if pos < len(text) and text[pos] == "/":
        return _parse_path(text, pos + 1, node)
    if pos < len(text) and text[pos] == "(":
        sub, pos = _parse_list(text, pos + 1)
        if pos >= len(text) or text[pos] != ")":
            raise FieldsError(text)
        _merge(node, sub)
        return pos + 1
    return pos


def _merge(into: Selection, other: Selection) -> None:
    for key, value in other.items():
        _merge(into.setdefault(key, {}), value)


def apply_fields(value: Any, selection: Selection) -> Any:
    """Return ``value`` reduced to ``selection``."""
    if not selection:
        return value
    if isinstance(value, list):
        return [apply_fields(item, selection) for item in value]
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key in selection:
                out[key] = apply_fields(item, selection[key])
            elif "*" in selection:
                out[key] = apply_fields(item, selection["*"])
        return out
    return value
