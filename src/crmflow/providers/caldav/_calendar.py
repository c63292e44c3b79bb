"""``CalendarProvider`` for one CalDAV calendar collection (RFC 4791, RFC 6578).

Remote ids are the members' paths on the server (percent-decoded, e.g.
``/alice/office/0f3a....ics``); versions are their ETags, verbatim (quoted).

* :meth:`CalDAVCalendar.list`: ``PROPFIND`` Depth 1 for ``getetag`` plus the
  collection's ``DAV:sync-token`` (the cursor, when ``incremental``).
* :meth:`CalDAVCalendar.list_changes`: ``REPORT sync-collection`` (RFC 6578);
  members answered 404 are deleted; ``DAV:valid-sync-token`` (403/409) ->
  ``CursorExpired``.
* :meth:`CalDAVCalendar.get_many`: one ``REPORT calendar-multiget`` for all ids.
* :meth:`CalDAVCalendar.create`: ``PUT <collection>/<idempotency key>.ics`` with
  ``If-None-Match: *``; 412 -> ``GET`` and adopt the item when it holds our UID
  (sync-peers.md §8 case 21). A missing ``ETag`` gives version None (case 15).
* ``update``/``delete``: ``PUT``/``DELETE`` with ``If-Match``; a 412 is checked
  with a ``GET``: gone -> ``ItemNotFound``, else ``PreconditionFailed``.

The server is untrusted: XML goes through ``defusedxml``, bodies are capped at
``MAX_BODY_BYTES``, redirects are not followed, and ``http://`` is allowed only
to loopback hosts. HTTP and transport errors become the
``crmflow.providers.base`` tree.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote, urljoin, urlsplit
from xml.sax.saxutils import escape

import httpx
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring

from crmflow.domain.calendar import (
    CalendarEvent,
    CalendarProvider,
    Capability,
    Changes,
    Listing,
    Notify,
    RemoteEvent,
    Written,
)
from crmflow.domain.secret import Secret
from crmflow.providers._tls import cause, client_context, require_safe_transport
from crmflow.providers.base import (
    AuthError,
    CursorExpired,
    ItemAlreadyExists,
    ItemNotFound,
    PreconditionFailed,
    ProviderError,
    RateLimited,
    TransientProviderError,
    UnsupportedOperation,
)
from crmflow.providers.caldav._discovery import (
    CALDAV,
    DAV,
    DEFAULT_TIMEOUT_S,
    MAX_BODY_BYTES,
    normalize_url,
)
from crmflow.providers.caldav._ical import ICalendarError, from_ical, to_ical

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

_log = logging.getLogger(__name__)

_XML = "application/xml; charset=utf-8"
_ICS = "text/calendar; charset=utf-8"

_LIST_QUERY = b"""<?xml version="1.0" encoding="utf-8"?>
<d:propfind xmlns:d="DAV:"><d:prop>
  <d:resourcetype/><d:getetag/><d:sync-token/>
</d:prop></d:propfind>"""

_SYNC_QUERY = """<?xml version="1.0" encoding="utf-8"?>
<d:sync-collection xmlns:d="DAV:">
  <d:sync-token>{token}</d:sync-token>
  <d:sync-level>1</d:sync-level>
  <d:prop><d:getetag/></d:prop>
</d:sync-collection>"""

_MULTIGET_QUERY = """<?xml version="1.0" encoding="utf-8"?>
<c:calendar-multiget xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">
  <d:prop><d:getetag/><c:calendar-data/></d:prop>
  {hrefs}
</c:calendar-multiget>"""


@dataclass(frozen=True, slots=True)
class _Reply:
    """An HTTP answer, read (and decoded) in full."""

    status_code: int
    headers: httpx.Headers
    content: bytes


def _tag(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def _status_code(element: Element | None) -> int | None:
    """The code of a ``DAV:status`` line (``HTTP/1.1 404 Not Found`` -> 404)."""
    if element is None or not element.text:
        return None
    parts = element.text.split()
    if len(parts) >= 2 and parts[1].isdigit():
        return int(parts[1])
    return None


class CalDAVCalendar(CalendarProvider):
    """One CalDAV calendar collection as a side of a sync pair.

    Args:
        collection_url: the collection's absolute URL (discovery's
            ``DiscoveredCalendar.url``).
        username, password: HTTP Basic credentials.
        extra_ca_file: PEM certificates trusted in addition to the system's.
        incremental: use RFC 6578 ``sync-collection`` (discovery saw a
            ``DAV:sync-token``); off, :meth:`list` gives no cursor.
        read_only: refuse every write (``UnsupportedOperation``).
        get_many_limit: most hrefs per ``calendar-multiget`` (None: any).
        transport: an httpx transport (tests inject a counting or mock one).

    Raises:
        ValidationFailed: a malformed URL, or ``http://`` to a non-loopback host.
        ConfigError: ``extra_ca_file`` cannot be loaded.
    """

    def __init__(
        self,
        collection_url: str,
        username: str,
        password: Secret,
        *,
        extra_ca_file: Path | None = None,
        incremental: bool = True,
        read_only: bool = False,
        get_many_limit: int | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        url = normalize_url(collection_url)
        if not url.endswith("/"):
            url += "/"
        parts = urlsplit(url)
        self._what = f"CalDAV server {parts.scheme}://{parts.netloc}"
        require_safe_transport(
            parts.hostname or "", parts.scheme == "https", self._what
        )
        self.url = url
        self._path = unquote(parts.path)
        self._auth = httpx.BasicAuth(username, password.reveal())
        self._verify = (
            client_context(extra_ca_file) if parts.scheme == "https" else True
        )
        self._timeout_s = timeout_s
        self._transport = transport
        caps = {Capability.INCREMENTAL} if incremental else set()
        if read_only:
            caps.add(Capability.READ_ONLY)
        self._capabilities = frozenset(caps)
        self._limit = get_many_limit

    # ---------------------------------------------------------- port

    @property
    def capabilities(self) -> frozenset[Capability]:
        return self._capabilities

    @property
    def get_many_limit(self) -> int | None:
        return self._limit

    async def list(self) -> Listing:
        response = await self._request(
            "PROPFIND", self.url, content=_LIST_QUERY, headers={"Depth": "1"}
        )
        self._expect(response, 207)
        items: dict[str, str] = {}
        token: str | None = None
        for href, status, props in self._responses(response.content):
            if status is not None and status >= 300:
                continue
            if self._is_self(href):
                token = _text(props.get(_tag(DAV, "sync-token")))
                continue
            kinds = props.get(_tag(DAV, "resourcetype"))
            if kinds is not None and kinds.find(_tag(DAV, "collection")) is not None:
                continue
            etag = _text(props.get(_tag(DAV, "getetag")))
            if etag is not None:
                items[href] = etag
        cursor = token if Capability.INCREMENTAL in self._capabilities else None
        if Capability.INCREMENTAL in self._capabilities and cursor is None:
            raise UnsupportedOperation(
                f"{self._what} gives the calendar no sync-token (RFC 6578); "
                "connect it without incremental sync."
            )
        return Listing(items=items, cursor=cursor)

    async def list_changes(self, cursor: str) -> Changes:
        if Capability.INCREMENTAL not in self._capabilities:
            raise UnsupportedOperation("This CalDAV calendar has no change feed.")
        body = _SYNC_QUERY.format(token=escape(cursor)).encode()
        response = await self._request(
            "REPORT", self.url, content=body, headers={"Depth": "0"}
        )
        # RFC 6578 section 3.2: DAV:valid-sync-token precondition (Radicale 403,
        # others 409/412); some servers answer 410 Gone for a forgotten token
        if response.status_code == 410 or (
            response.status_code in (403, 409, 412)
            and b"valid-sync-token" in response.content
        ):
            raise CursorExpired(
                f"{self._what} no longer knows the sync token; a full listing follows."
            )
        self._expect(response, 207)
        root = self._parse(response.content)
        changed: dict[str, str] = {}
        deleted: set[str] = set()
        for href, status, props in self._responses(response.content, root):
            if self._is_self(href):
                continue
            if status == 404:
                deleted.add(href)
                changed.pop(href, None)
                continue
            etag = _text(props.get(_tag(DAV, "getetag")))
            if etag is not None:
                changed[href] = etag
                deleted.discard(href)
        token = _text(root.find(_tag(DAV, "sync-token")))
        if token is None:
            raise TransientProviderError(
                f"{self._what} answered sync-collection without a new sync token."
            )
        return Changes(changed=changed, deleted=frozenset(deleted), cursor=token)

    async def get_many(self, remote_ids: Sequence[str]) -> Sequence[RemoteEvent]:
        if not remote_ids:
            return []
        hrefs = "\n  ".join(
            f"<d:href>{escape(quote(remote_id))}</d:href>" for remote_id in remote_ids
        )
        body = _MULTIGET_QUERY.format(hrefs=hrefs).encode()
        response = await self._request(
            "REPORT", self.url, content=body, headers={"Depth": "1"}
        )
        self._expect(response, 207)
        wanted = set(remote_ids)
        found: list[RemoteEvent] = []
        for href, status, props in self._responses(response.content):
            if href not in wanted or (status is not None and status >= 300):
                continue
            etag = _text(props.get(_tag(DAV, "getetag")))
            data = props.get(_tag(CALDAV, "calendar-data"))
            if etag is None or data is None or not data.text:
                continue
            try:
                parsed = from_ical(data.text)
            except ICalendarError as exc:
                _log.warning("skipping %s on %s: %s", href, self._what, exc)
                continue
            found.append(RemoteEvent(href, etag, parsed.event, parsed.last_modified))
        return found

    async def create(
        self, event: CalendarEvent, *, idempotency_key: str, notify: Notify
    ) -> Written:
        self._writable()
        href = f"{self._path}{idempotency_key}.ics"
        response = await self._request(
            "PUT",
            self._url(href),
            content=to_ical(event),
            headers={"If-None-Match": "*", "Content-Type": _ICS},
        )
        if response.status_code in (200, 201, 204):
            return Written(href, _etag(response))
        if response.status_code == 412:
            existing = await self._request("GET", self._url(href))
            if existing.status_code == 200:
                try:
                    uid = from_ical(existing.content).event.ical_uid
                except ICalendarError:
                    uid = None
                if uid == event.ical_uid:
                    return Written(href, _etag(existing), adopted=True)
            raise ItemAlreadyExists(
                f"{self._what} already holds {href}, and it is not this event."
            )
        if response.status_code in (403, 409) and b"no-uid-conflict" in (
            response.content
        ):
            raise ItemAlreadyExists(
                f"{self._what} already holds an event with UID {event.ical_uid!r}."
            )
        raise self._error(response)

    async def update(
        self, remote_id: str, event: CalendarEvent, *, if_match: str, notify: Notify
    ) -> str | None:
        self._writable()
        response = await self._request(
            "PUT",
            self._url(remote_id),
            content=to_ical(event),
            headers={"If-Match": if_match, "Content-Type": _ICS},
        )
        if response.status_code in (200, 201, 204):
            return _etag(response)
        raise await self._write_error(response, remote_id)

    async def delete(self, remote_id: str, *, if_match: str, notify: Notify) -> None:
        self._writable()
        response = await self._request(
            "DELETE", self._url(remote_id), headers={"If-Match": if_match}
        )
        if response.status_code in (200, 204):
            return
        raise await self._write_error(response, remote_id)

    # ---------------------------------------------------------- helpers

    def _writable(self) -> None:
        if Capability.READ_ONLY in self._capabilities:
            raise UnsupportedOperation("This CalDAV calendar is read-only.")

    def _url(self, path: str) -> str:
        return urljoin(self.url, quote(path))

    def _is_self(self, href: str) -> bool:
        return href.rstrip("/") == self._path.rstrip("/")

    async def _request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> _Reply:
        all_headers = dict(headers or {})
        if content is not None and "Content-Type" not in all_headers:
            all_headers["Content-Type"] = _XML
        try:
            async with (
                httpx.AsyncClient(
                    verify=self._verify,
                    timeout=httpx.Timeout(self._timeout_s),
                    follow_redirects=False,
                    transport=self._transport,
                ) as client,
                client.stream(
                    method,
                    url,
                    content=content,
                    headers=all_headers,
                    auth=self._auth,
                ) as response,
            ):
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_BODY_BYTES:
                        raise ProviderError(
                            f"{self._what} sent more than "
                            f"{MAX_BODY_BYTES // (1024 * 1024)} MiB for one request."
                        )
                    chunks.append(chunk)
                return _Reply(response.status_code, response.headers, b"".join(chunks))
        except httpx.TransportError as exc:
            if cause(exc, ssl.SSLError) is not None:
                raise ProviderError(
                    f"{self._what}: the TLS connection failed; check the "
                    "server's certificate."
                ) from None
            raise TransientProviderError(
                f"{self._what} could not be reached ({type(exc).__name__}); "
                "crmflow tries again later."
            ) from None

    def _expect(self, response: _Reply, status: int) -> None:
        if response.status_code != status:
            raise self._error(response)

    def _error(self, response: _Reply) -> ProviderError:
        status = response.status_code
        if status == 401:
            return AuthError(
                f"{self._what} refused the user name or password (HTTP 401); "
                "reconnect the calendar."
            )
        if status == 403:
            return AuthError(
                f"{self._what} refuses access to this calendar (HTTP 403)."
            )
        if status == 404:
            return ItemNotFound(f"{self._what}: not found (HTTP 404).")
        if status == 412:
            return PreconditionFailed(f"{self._what}: the item changed (HTTP 412).")
        if status == 429:
            retry = response.headers.get("Retry-After", "")
            return RateLimited(float(retry) if retry.isdigit() else None)
        if status >= 500:
            return TransientProviderError(
                f"{self._what} failed with HTTP {status}; crmflow tries again later."
            )
        return ProviderError(f"{self._what} answered HTTP {status} unexpectedly.")

    async def _write_error(self, response: _Reply, remote_id: str) -> ProviderError:
        if response.status_code == 404:
            return ItemNotFound(f"{self._what} no longer holds {remote_id}.")
        if response.status_code == 412:
            # If-Match on a missing resource is 412 too: tell the two apart
            current = await self._request("HEAD", self._url(remote_id))
            if current.status_code == 404:
                return ItemNotFound(f"{self._what} no longer holds {remote_id}.")
            return PreconditionFailed(
                f"{self._what}: {remote_id} changed since it was read."
            )
        return self._error(response)

    def _parse(self, body: bytes) -> Element:
        try:
            root: Element = fromstring(body)
        except (ParseError, DefusedXmlException):
            raise ProviderError(f"{self._what} sent malformed or unsafe XML.") from None
        if root.tag != _tag(DAV, "multistatus"):
            raise ProviderError(f"{self._what} did not answer with a multistatus.")
        return root

    def _responses(
        self, body: bytes, root: Element | None = None
    ) -> Sequence[tuple[str, int | None, dict[str, Element]]]:
        """``(path, status, props)`` per ``DAV:response``: the response-level
        status (None when given per propstat) and the props found with 200."""
        tree = root if root is not None else self._parse(body)
        result = []
        for item in tree.findall(_tag(DAV, "response")):
            href = _text(item.find(_tag(DAV, "href")))
            if href is None:
                continue
            path = unquote(urlsplit(urljoin(self.url, href)).path)
            props: dict[str, Element] = {}
            for propstat in item.findall(_tag(DAV, "propstat")):
                code = _status_code(propstat.find(_tag(DAV, "status")))
                prop = propstat.find(_tag(DAV, "prop"))
                if code == 200 and prop is not None:
                    for child in prop:
                        props[child.tag] = child
            result.append((path, _status_code(item.find(_tag(DAV, "status"))), props))
        return result


def _etag(reply: _Reply) -> str | None:
    """The ``ETag`` header, verbatim (None: the server sent none, RFC 4791 §5.3.4)."""
    value: str | None = reply.headers.get("ETag")
    return value or None


def _text(element: Element | None) -> str | None:
    if element is None or element.text is None:
        return None
    value = element.text.strip()
    return value or None


__all__ = ["CalDAVCalendar"]
