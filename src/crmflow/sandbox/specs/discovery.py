"""Google discovery documents as a route table.

Google publishes a machine-readable description of each API (a
``discovery#restDescription``). This package ships byte-identical copies of the
documents bundled in google-api-python-client 2.202.0
(``googleapiclient/discovery_cache/documents/``; ``calendar.v3.json`` revision
20261030, ``gmail.v1.json`` revision 20261005, ``oauth2.v2.json``), so the
sandbox needs no test-only package at run time. ``tests/sandbox`` checks the
copies against the installed client's files.

From a document this module builds :class:`ApiMethod` entries — id, HTTP
method, full path (``servicePath`` + ``path``), typed parameters, request and
response schema names, scopes — and matches incoming paths to them. Path
templates follow RFC 6570 as used by discovery: ``{name}`` matches one path
segment, ``{+name}`` matches the rest.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal
from urllib.parse import unquote

__all__ = [
    "ApiMethod",
    "DiscoveryDocument",
    "Parameter",
    "bundled_document",
    "bundled_text",
]

BundledName = Literal["calendar", "gmail", "oauth2"]

_FILES: dict[str, str] = {
    "calendar": "calendar.v3.json",
    "gmail": "gmail.v1.json",
    "oauth2": "oauth2.v2.json",
}


@dataclass(frozen=True)
class Parameter:
    """One method or global parameter."""

    name: str
    #: "path" or "query"
    location: str
    #: discovery type: string, integer, boolean, number
    type: str
    #: e.g. int32, uint32, int64, uint64, date-time
    format: str | None
    required: bool
    repeated: bool
    enum: tuple[str, ...] | None
    default: str | None
    minimum: int | None
    maximum: int | None

    @classmethod
    def from_json(cls, name: str, raw: Mapping[str, Any]) -> Parameter:
        """Build from a discovery ``parameters`` entry."""
        enum = raw.get("enum")
        minimum = raw.get("minimum")
        maximum = raw.get("maximum")
        return cls(
            name=name,
            location=str(raw.get("location", "query")),
            type=str(raw.get("type", "string")),
            format=raw.get("format"),
            required=bool(raw.get("required", False)),
            repeated=bool(raw.get("repeated", False)),
            enum=tuple(enum) if enum else None,
            default=raw.get("default"),
            minimum=int(minimum) if minimum is not None else None,
            maximum=int(maximum) if maximum is not None else None,
        )


@dataclass(frozen=True)
class ApiMethod:
    """One discovery method, addressable by path."""

    #: e.g. "calendar.events.list"
    id: str
    http_method: str
    #: template relative to the API root, servicePath included
    #: ("calendar/v3/calendars/{calendarId}/events", "gmail/v1/users/{userId}/profile")
    path: str
    parameters: Mapping[str, Parameter]
    #: request body schema name, if any
    request: str | None
    #: response schema name; None = empty response
    response: str | None
    scopes: frozenset[str]
    supports_subscription: bool
    #: media upload: accepted MIME patterns and maximum size in bytes (None = no upload)
    media_accept: tuple[str, ...] | None
    media_max_bytes: int | None
    pattern: re.Pattern[str]
    #: number of literal characters in the template; more literal = more specific
    specificity: int

    def query_parameters(self) -> dict[str, Parameter]:
        """Return the method's query parameters by name."""
        return {n: p for n, p in self.parameters.items() if p.location == "query"}


def _compile(template: str) -> tuple[re.Pattern[str], int]:
    pattern = ""
    literal = 0
    for piece in re.split(r"(\{\+?[^}]+\})", template):
        if piece.startswith("{+"):
            pattern += f"(?P<{_group(piece[2:-1])}>.+)"
        elif piece.startswith("{"):
            pattern += f"(?P<{_group(piece[1:-1])}>[^/]+)"
        else:
            pattern += re.escape(piece)
            literal += len(piece)
    return re.compile(f"^{pattern}$"), literal


def _size(value: Any) -> int | None:
    if value is None:
        return None
    text = str(value).upper()
    for suffix, factor in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)


def _group(name: str) -> str:
    # Parameter names are identifiers in these documents; keep a guard anyway.
    return re.sub(r"\W", "_", name)


class DiscoveryDocument:
    """A parsed discovery document. Immutable after construction."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw = raw
        self.name: str = raw["name"]
        self.version: str = raw["version"]
        self.revision: str = raw.get("revision", "")
        self.root_url: str = raw["rootUrl"]
        self.service_path: str = raw.get("servicePath", "")
        self.schemas: Mapping[str, Any] = raw.get("schemas", {})
        self.global_parameters: dict[str, Parameter] = {
            n: Parameter.from_json(n, p) for n, p in raw.get("parameters", {}).items()
        }
        methods = list(self._walk(raw.get("resources", {})))
        # Literal segments win over parameters ("events/watch" before "events/{eventId}").
        methods.sort(key=lambda m: -m.specificity)
        self.methods: tuple[ApiMethod, ...] = tuple(methods)
        self.by_id: dict[str, ApiMethod] = {m.id: m for m in methods}

    @classmethod
    def from_text(cls, text: str) -> DiscoveryDocument:
        """Parse a discovery document from JSON text."""
        return cls(json.loads(text))

    def _walk(self, resources_: Mapping[str, Any]) -> Iterator[ApiMethod]:
        for resource in resources_.values():
            for raw in resource.get("methods", {}).values():
                full = self.service_path + raw["path"]
                pattern, literal = _compile(full)
                yield ApiMethod(
                    id=raw["id"],
                    http_method=raw["httpMethod"],
                    path=full,
                    parameters={
                        n: Parameter.from_json(n, p)
                        for n, p in raw.get("parameters", {}).items()
                    },
                    request=raw.get("request", {}).get("$ref"),
                    response=raw.get("response", {}).get("$ref"),
                    scopes=frozenset(raw.get("scopes", ())),
                    supports_subscription=bool(raw.get("supportsSubscription", False)),
                    media_accept=tuple(raw["mediaUpload"].get("accept", ()))
                    if raw.get("supportsMediaUpload") and "mediaUpload" in raw
                    else None,
                    media_max_bytes=_size(raw.get("mediaUpload", {}).get("maxSize")),
                    pattern=pattern,
                    specificity=literal,
                )
            yield from self._walk(resource.get("resources", {}))

    def match(
        self, http_method: str, path: str
    ) -> tuple[ApiMethod, dict[str, str]] | None:
        """Find the method serving ``http_method path``.

        ``path`` is relative to the API root and still percent-encoded, so an
        encoded ``/`` inside a parameter cannot split a segment.

        Returns:
            The method and its decoded path parameters, or None when no method
            has this path and HTTP method.
        """
        for method in self.methods:
            if method.http_method != http_method:
                continue
            found = method.pattern.match(path)
            if found is not None:
                return method, {
                    name: unquote(found.group(_group(name)))
                    for name, p in method.parameters.items()
                    if p.location == "path"
                }
        return None

    def path_exists(self, path: str) -> bool:
        """True when some method (any HTTP method) has this path."""
        return any(m.pattern.match(path) for m in self.methods)

    def all_scopes(self) -> frozenset[str]:
        """Return every OAuth scope the document declares."""
        scopes = self.raw.get("auth", {}).get("oauth2", {}).get("scopes", {})
        return frozenset(scopes)


def bundled_text(name: BundledName) -> str:
    """Return the JSON text of a bundled discovery document."""
    return (
        resources.files(__package__ or "crmflow.sandbox.specs") / _FILES[name]
    ).read_text(encoding="utf-8")


@cache
def bundled_document(name: BundledName) -> DiscoveryDocument:
    """Return a bundled discovery document, parsed once per process."""
    return DiscoveryDocument.from_text(bundled_text(name))
