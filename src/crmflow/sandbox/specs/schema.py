"""JSON values checked against discovery schemas.

:func:`check_value` walks a value and a discovery schema (``$ref``,
``properties``, ``additionalProperties``, ``items``, ``type``, ``format``,
``enum``) and returns one message per violation. Formats follow the discovery
conventions: ``int64``/``uint64`` are decimal strings, ``int32``/``uint32`` JSON
integers, ``date-time`` RFC 3339, ``date`` ``YYYY-MM-DD``, ``byte`` base64 (URL-safe
or standard alphabet).

Two modes:

* ``request`` — field-level ``annotations.required`` for the given method id
  are enforced (``Event.start`` for ``calendar.events.insert``), and a
  ``date-time`` may omit its offset (Calendar's ``EventDateTime.dateTime``: "A
  time zone offset is required unless a time zone is explicitly specified in
  timeZone").
* ``response`` — every ``date-time`` carries an offset and no property outside
  the schema may appear.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from crmflow.sandbox.specs.discovery import DiscoveryDocument

__all__ = ["Mode", "check_value"]

Mode = Literal["request", "response"]

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATE_TIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
)
_DATE_TIME_LOCAL = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?$"
)
_BYTE = re.compile(r"^[A-Za-z0-9+/_-]*={0,2}$")
_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "uint32": (0, 2**32 - 1)}


def check_value(
    doc: DiscoveryDocument,
    schema: Mapping[str, Any],
    value: Any,
    where: str,
    *,
    mode: Mode,
    method_id: str | None = None,
) -> list[str]:
    """Return every violation of ``schema`` by ``value`` (empty when it conforms).

    Args:
        doc: the document whose ``schemas`` resolve ``$ref``.
        schema: a schema object (or ``{"$ref": name}``).
        value: the decoded JSON value.
        where: path used in messages (``"Event.start.dateTime"``).
        mode: ``request`` or ``response`` (see the module docstring).
        method_id: enables ``annotations.required`` in request mode.
    """
    problems: list[str] = []
    _check(doc, schema, value, where, mode, method_id, problems)
    return problems


def _check(
    doc: DiscoveryDocument,
    schema: Mapping[str, Any],
    value: Any,
    where: str,
    mode: Mode,
    method_id: str | None,
    out: list[str],
) -> None:
    ref = schema.get("$ref")
    if ref is not None:
        target = doc.schemas.get(ref)
        if target is None:
            out.append(f"{where}: unknown schema {ref}")
            return
        schema = target
    kind = schema.get("type", "any")
    if kind == "any":
        return
    if kind == "object":
        _check_object(doc, schema, value, where, mode, method_id, out)
    elif kind == "array":
        if not isinstance(value, list):
            out.append(f"{where}: expected array, got {type(value).__name__}")
            return
        items = schema.get("items", {})
        for i, item in enumerate(value):
            _check(doc, items, item, f"{where}[{i}]", mode, method_id, out)
    elif kind == "string":
        _check_string(schema, value, where, mode, out)
    elif kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            out.append(f"{where}: expected integer, got {value!r}")
            return
        low, high = _INT_RANGES.get(schema.get("format", ""), (-(2**63), 2**64 - 1))
        if not low <= value <= high:
            out.append(f"{where}: {value} outside {schema.get('format')}")
    elif kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            out.append(f"{where}: expected number, got {value!r}")
    elif kind == "boolean":
        if not isinstance(value, bool):
            out.append(f"{where}: expected boolean, got {value!r}")
    else:  # pragma: no cover - the shipped documents use no other types
        out.append(f"{where}: unsupported schema type {kind}")


def _check_object(
    doc: DiscoveryDocument,
    schema: Mapping[str, Any],
    value: Any,
    where: str,
    mode: Mode,
    method_id: str | None,
    out: list[str],
) -> None:
    if not isinstance(value, dict):
        out.append(f"{where}: expected object, got {type(value).__name__}")
        return
    properties: Mapping[str, Any] = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    for key, item in value.items():
        if key in properties:
            # JSON null clears a field in a PATCH body (Calendar extended
            # properties: "setting a value to null deletes the key").
            if item is None and mode == "request":
                continue
            _check(doc, properties[key], item, f"{where}.{key}", mode, method_id, out)
        elif extra is not None:
            if item is None and mode == "request":
                continue
            _check(doc, extra, item, f"{where}.{key}", mode, method_id, out)
        else:
            out.append(f"{where}: unknown property {key!r}")
    if mode == "request" and method_id is not None:
        for key, prop in properties.items():
            required = prop.get("annotations", {}).get("required", ())
            if method_id in required and key not in value:
                out.append(f"{where}.{key}: required for {method_id}")


def _check_string(
    schema: Mapping[str, Any], value: Any, where: str, mode: Mode, out: list[str]
) -> None:
    if not isinstance(value, str):
        out.append(f"{where}: expected string, got {value!r}")
        return
    fmt = schema.get("format")
    if fmt in ("int64", "uint64"):
        digits = value[1:] if fmt == "int64" and value.startswith("-") else value
        if not digits.isdigit():
            out.append(f"{where}: {value!r} is not a {fmt} string")
    elif fmt == "date-time":
        pattern = _DATE_TIME if mode == "response" else _DATE_TIME_LOCAL
        if not pattern.match(value):
            out.append(f"{where}: {value!r} is not an RFC 3339 date-time")
    elif fmt == "date":
        if not _DATE.match(value):
            out.append(f"{where}: {value!r} is not a date")
    elif fmt == "byte" and not _BYTE.match(value):
        out.append(f"{where}: not base64")
    enum = schema.get("enum")
    if enum is not None and value not in enum:
        out.append(f"{where}: {value!r} not in enum {enum}")
