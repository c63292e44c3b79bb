"""``CalendarProvider`` for one CalDAV calendar collection (RFC 4791, RFC 6578).

Remote ids are the members' paths on the server (percent-decoded, e.g.
``/alice/office/0f3a....ics``); versions are their ETags, verbatim (quoted).

* :meth:`CalDAVCalendar.list`, ``incremental``: one ``REPORT sync-collection``
  (RFC 6578) with an empty token asking for ``getetag`` and
  ``calendar-data``: every member, its data and the new sync token (the
  cursor) in one answer. The data is kept by href for :meth:`get_many`. A
  server that refuses the report gets the ``PROPFIND`` below (once refused,
  for the object's lifetime); a listing whose data would pass
  ``MAX_REPORT_BYTES`` is made again with ETags only.
* :meth:`CalDAVCalendar.list`, not ``incremental``: ``PROPFIND`` Depth 1 for
  ``getetag`` plus the collection's ``DAV:sync-token``.
* :meth:`CalDAVCalendar.list_changes`: ``REPORT sync-collection`` for ETags
  and ``calendar-data``, the data kept by href as the listing's is; members
  answered 404 are deleted; ``DAV:valid-sync-token`` (403/409) ->
  ``CursorExpired``. Truncated answers (507 on the collection, RFC 6578
  section 3.6) are followed with the token they give. A server that refuses
  the report with data, or an answer with it past ``MAX_REPORT_BYTES``, is
  asked again for ETags only (and only for them from then on).
* :meth:`CalDAVCalendar.get_many`: members whose data the last listing or
  change feed brought are answered from it, each once (a second fetch asks the
  server again); the rest with ``REPORT calendar-multiget``, at most
  :attr:`get_many_limit` hrefs each, split in halves while an answer passes
  ``MAX_REPORT_BYTES``.
* :meth:`CalDAVCalendar.create`: ``PUT <collection>/<idempotency key>.ics`` with
  ``If-None-Match: *``; 412 -> ``GET`` and adopt the item when it holds our UID
  (sync-peers.md §8 case 21). A missing ``ETag`` gives version None (case 15).
* ``update``/``delete``: ``PUT``/``DELETE`` with ``If-Match``; a 412 is checked
  with a ``GET``: gone -> ``ItemNotFound``, else ``PreconditionFailed``.
  ``update`` rewrites the server's copy rather than replacing it: what crmflow
  does not map (alarms, other clients' ``X-`` properties, attendee roles, ...)
  is carried over (``_ical.to_ical(keep=...)``). The copy is the one this object
  last read or listed at that ETag, else one ``GET``.

Writes drop the member's kept data. The server is untrusted: XML goes through
``defusedxml``, bodies are capped at ``MAX_BODY_BYTES`` (answers that grow with
the calendar, ``REPORT`` and the listing ``PROPFIND``, at
``MAX_REPORT_BYTES``), redirects are not followed, and ``http://`` is allowed
only to loopback hosts. HTTP and transport errors become the
``crmflow.providers.base`` tree.

HTTP connections: one ``httpx.AsyncClient`` per object, made on the first
request. Inside ``async with calendar:`` the client and its connections serve
every call until the block ends (:meth:`~CalDAVCalendar.aclose` closes them
earlier). Outside such a block the client is closed when the port call that
made it returns, so an object nobody closes leaks nothing.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Self
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
from crmflow.providers._retry import RetryTransport, parse_retry_after
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

#: largest ``REPORT`` answer read, in bytes: a full listing carries every
#: member's calendar data (about 1 KB to 3 KB an event, more with attendees)
MAX_REPORT_BYTES = 64 * 1024 * 1024
#: most hrefs per ``calendar-multiget`` unless the caller says otherwise
DEFAULT_GET_MANY_LIMIT = 500
#: most truncated ``sync-collection`` answers followed in one call
MAX_SYNC_PAGES = 1000
#: answers to the initial ``sync-collection`` that mean "not offered here"
_NO_SYNC_REPORT = frozenset({400, 403, 405, 409, 412, 415, 422, 501})

_XML = "application/xml; charset=utf-8"
_ICS = "text/calendar; charset=utf-8"

_LIST_QUERY = b"""<?xml version="1.0" encoding="utf-8"?>
<d:propfind xmlns:d="DAV:"><d:prop>
  <d:resourcetype/><d:getetag/><d:sync-token/>
</d:prop></d:propfind>"""

_SYNC_QUERY = """<?xml version="1.0" encoding="utf-8"?>
<d:sync-collection xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">
  <d:sync-token>{token}</d:sync-token>
  <d:sync-level>1</d:sync-level>
  <d:prop><d:getetag/>{data}</d:prop>
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


class _TooLarge(ProviderError):
    """An answer passed its size cap (callers may ask for less and retry)."""


class _NoSyncReport(Exception):
    """The server does not answer an initial ``sync-collection``."""


class _DataRefused(Exception):
    """The server refused a ``sync-collection`` that asked for calendar data."""


@dataclass(slots=True)
class _SyncPage:
    """What ``sync-collection`` answers said, merged in order."""

    #: href -> ETag of members created or changed
    changed: dict[str, str] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    #: href -> calendar data, when it was asked for
    data: dict[str, str] = field(default_factory=dict)
    token: str | None = None
    #: the server cut the answer short (507): continue from ``token``
    truncated: bool = False

    def merge(self, later: _SyncPage) -> None:
        for href in later.deleted:
            self.changed.pop(href, None)
            self.data.pop(href, None)
        for href in later.changed.keys() - later.data.keys():
            self.data.pop(href, None)  # older data, not of this version
        self.deleted |= later.deleted
        self.deleted.difference_update(later.changed)
        self.changed.update(later.changed)
        self.data.update(later.data)
        self.token = later.token
        self.truncated = later.truncated


@functools.cache
def _plain_context() -> ssl.SSLContext:
    """The TLS context of ``http://`` clients: never used for a handshake, but
    made once, so that a client does not load the CA bundle (httpx would for
    ``verify=True``)."""
    return client_context(None, for_http=True)


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
        get_many_limit: most hrefs per ``calendar-multiget`` (None: any;
            answers passing ``MAX_REPORT_BYTES`` are split either way).
        transport: an httpx transport (tests inject a counting or mock one);
            closing the object closes it, as httpx clients do. A
            :class:`~crmflow.providers._retry.RetryTransport` (the
            services') adds the retry policy and keeps its inner transport
            open.

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
        get_many_limit: int | None = DEFAULT_GET_MANY_LIMIT,
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
            client_context(extra_ca_file, for_http=True)
            if parts.scheme == "https"
            else _plain_context()
        )
        self._timeout_s = timeout_s
        self._transport = transport
        caps = {Capability.CANCELLED_EVENTS}
        if incremental:
            caps.add(Capability.INCREMENTAL)
        if read_only:
            caps.add(Capability.READ_ONLY)
        self._capabilities = frozenset(caps)
        self._limit = get_many_limit
        self._client: httpx.AsyncClient | None = None
        #: ``async with`` blocks open on this object
        self._opened = 0
        #: port calls running
        self._calls = 0
        #: href -> (ETag, calendar data) from the last listing, not fetched yet
        self._kept: dict[str, tuple[str, str]] = {}
        #: href -> (ETag, calendar data) of the items handed out, so an update
        #: can rewrite the copy it replaces without fetching it again
        self._read: dict[str, tuple[str, str]] = {}
        #: False once the server refused an initial sync-collection
        self._sync_listing = True
        #: False once a sync-collection asking for calendar data was refused or
        #: passed MAX_REPORT_BYTES: later ones ask for ETags only
        self._sync_data = True

    # ---------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        """Keep the HTTP client (and its connections) across calls until the
        block ends."""
        self._opened += 1
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._opened -= 1
        if not self._opened:
            await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client and forget the data kept from the last
        listing. Safe to repeat; a later call connects again."""
        self._kept.clear()
        self._read.clear()
        await self._close_client()

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    @contextlib.asynccontextmanager
    async def _call(self) -> AsyncIterator[None]:
        """One port call: the client it makes is closed at its end unless an
        ``async with`` block keeps it."""
        self._calls += 1
        try:
            yield
        finally:
            self._calls -= 1
            if not self._calls and not self._opened:
                await self._close_client()

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            transport = self._transport
            if isinstance(transport, RetryTransport):
                # the deployment's retry policy over a pool with this
                # server's TLS trust (CRMFLOW_EXTRA_CA_FILE included)
                transport = transport.for_client(verify=self._verify)
            self._client = httpx.AsyncClient(
                verify=self._verify,
                timeout=httpx.Timeout(self._timeout_s),
                follow_redirects=False,
                transport=transport,
            )
        return self._client

    # ---------------------------------------------------------- port

    @property
    def capabilities(self) -> frozenset[Capability]:
        return self._capabilities

    @property
    def get_many_limit(self) -> int | None:
        return self._limit

    async def list(self) -> Listing:
        async with self._call():
            if Capability.INCREMENTAL in self._capabilities and self._sync_listing:
                try:
                    return await self._sync_listing_of_all()
                except _NoSyncReport:
                    self._sync_listing = False
            return await self._propfind_listing()

    async def _sync_listing_of_all(self) -> Listing:
        """Every member, its ETag and (normally) its data, with the new token."""
        try:
            page = await self._sync_with_data("")
        except CursorExpired:
            # a server that forgets the token of its own truncated answer
            raise _NoSyncReport from None
        if page.token is None:
            raise _NoSyncReport
        self._kept = {
            href: (etag, page.data[href])
            for href, etag in page.changed.items()
            if href in page.data
        }
        return Listing(items=page.changed, cursor=page.token)

    async def _propfind_listing(self) -> Listing:
        response = await self._request(
            "PROPFIND",
            self.url,
            content=_LIST_QUERY,
            headers={"Depth": "1"},
            limit=MAX_REPORT_BYTES,
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
        # kept data stays only where the listing shows the same version
        self._kept = {
            href: kept
            for href, kept in self._kept.items()
            if items.get(href) == kept[0]
        }
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
        async with self._call():
            page = await self._sync_with_data(cursor)
        if page.token is None:
            raise TransientProviderError(
                f"{self._what} answered sync-collection without a new sync token."
            )
        for href in page.deleted:
            self._kept.pop(href, None)
        for href, etag in page.changed.items():
            text = page.data.get(href)
            if text is None:
                self._kept.pop(href, None)
            else:
                self._kept[href] = (etag, text)
        return Changes(
            changed=page.changed, deleted=frozenset(page.deleted), cursor=page.token
        )

    async def _sync_with_data(self, token: str) -> _SyncPage:
        """``sync-collection`` from ``token`` asking for the members' calendar
        data too, which then answers :meth:`get_many` without a
        ``calendar-multiget``; without the data once an answer with it passed
        :data:`MAX_REPORT_BYTES`, or once the server refused a report with it
        (400, 403, 405, 409, 412, 415, 422 or 501 other than an unknown
        token): the same report without data is sent, and its answer, success
        or error, stands.

        The data of a change this client wrote itself (its ETag already in the
        sync status) comes along unused: a larger answer, against a second
        request for every change feed that holds someone else's edit. A
        server that leaves the data out (RFC 6578 lets it) costs nothing:
        :meth:`get_many` fetches what it did not send.
        """
        if self._sync_data:
            try:
                return await self._sync(token, with_data=True)
            except (_TooLarge, _DataRefused):
                self._sync_data = False
        return await self._sync(token, with_data=False)

    async def _sync(self, token: str, *, with_data: bool) -> _SyncPage:
        """``sync-collection`` from ``token`` (empty: everything), following
        truncated answers.

        Raises:
            CursorExpired: the server no longer knows ``token``.
            _NoSyncReport: ``token`` is empty and the server refuses the report.
        """
        merged = _SyncPage()
        for _ in range(MAX_SYNC_PAGES):
            page = await self._sync_page(token, with_data=with_data)
            merged.merge(page)
            if not page.truncated:
                return merged
            if page.token is None or page.token == token:
                break
            token = page.token
        raise TransientProviderError(
            f"{self._what} cut its sync-collection answers short without making "
            "progress; crmflow tries again later."
        )

    async def _sync_page(self, token: str, *, with_data: bool) -> _SyncPage:
        data = "<c:calendar-data/>" if with_data else ""
        body = _SYNC_QUERY.format(token=escape(token), data=data).encode()
        response = await self._request(
            "REPORT",
            self.url,
            content=body,
            headers={"Depth": "0"},
            limit=MAX_REPORT_BYTES,
        )
        code = response.status_code
        if not token and code in _NO_SYNC_REPORT:
            raise _NoSyncReport
        # RFC 6578 section 3.2: DAV:valid-sync-token precondition (Radicale 403,
        # others 409/412); some servers answer 410 Gone for a forgotten token
        if code == 410 or (
            code in (403, 409, 412) and b"valid-sync-token" in response.content
        ):
            raise CursorExpired(
                f"{self._what} no longer knows the sync token; a full listing follows."
            )
        if with_data and code in _NO_SYNC_REPORT:
            raise _DataRefused
        self._expect(response, 207)
        root = self._parse(response.content)
        page = _SyncPage(token=_text(root.find(_tag(DAV, "sync-token"))))
        for href, status, props in self._responses(response.content, root):
            if self._is_self(href):
                # RFC 6578 section 3.6: 507 on the collection = truncated
                page.truncated = page.truncated or status == 507
                continue
            if status == 404:
                page.deleted.add(href)
                page.changed.pop(href, None)
                page.data.pop(href, None)
                continue
            etag = _text(props.get(_tag(DAV, "getetag")))
            if etag is None:
                continue
            page.changed[href] = etag
            page.deleted.discard(href)
            text = _calendar_data(props)
            if text is None:
                page.data.pop(href, None)
            else:
                page.data[href] = text
        return page

    async def get_many(self, remote_ids: Sequence[str]) -> Sequence[RemoteEvent]:
        found: list[RemoteEvent] = []
        missing: list[str] = []
        for remote_id in dict.fromkeys(remote_ids):
            kept = self._kept.pop(remote_id, None)
            if kept is None:
                missing.append(remote_id)
                continue
            item = self._item(remote_id, *kept)
            if item is not None:
                found.append(item)
        if not missing:
            return found
        limit = self._limit or len(missing)
        async with self._call():
            for start in range(0, len(missing), limit):
                found.extend(await self._multiget(missing[start : start + limit]))
        return found

    async def _multiget(self, remote_ids: Sequence[str]) -> Sequence[RemoteEvent]:
        """One ``calendar-multiget``; halves of it while the answer is too large."""
        hrefs = "\n  ".join(
            f"<d:href>{escape(quote(remote_id))}</d:href>" for remote_id in remote_ids
        )
        body = _MULTIGET_QUERY.format(hrefs=hrefs).encode()
        try:
            response = await self._request(
                "REPORT",
                self.url,
                content=body,
                headers={"Depth": "1"},
                limit=MAX_REPORT_BYTES,
            )
        except _TooLarge:
            if len(remote_ids) == 1:
                raise
            half = len(remote_ids) // 2
            first = await self._multiget(remote_ids[:half])
            return [*first, *await self._multiget(remote_ids[half:])]
        self._expect(response, 207)
        wanted = set(remote_ids)
        found: list[RemoteEvent] = []
        for href, status, props in self._responses(response.content):
            if href not in wanted or (status is not None and status >= 300):
                continue
            etag = _text(props.get(_tag(DAV, "getetag")))
            text = _calendar_data(props)
            if etag is None or text is None:
                continue
            item = self._item(href, etag, text)
            if item is not None:
                found.append(item)
        return found

    def _item(self, href: str, etag: str, text: str) -> RemoteEvent | None:
        try:
            parsed = from_ical(text)
        except ICalendarError as exc:
            _log.warning("skipping %s on %s: %s", href, self._what, exc)
            return None
        self._read[href] = (etag, text)
        return RemoteEvent(href, etag, parsed.event, parsed.last_modified)

    async def create(
        self, event: CalendarEvent, *, idempotency_key: str, notify: Notify
    ) -> Written:
        self._writable()
        href = f"{self._path}{idempotency_key}.ics"
        self._kept.pop(href, None)
        async with self._call():
            return await self._create(href, event)

    async def _create(self, href: str, event: CalendarEvent) -> Written:
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
        listed = self._kept.pop(remote_id, None)
        seen = self._read.pop(remote_id, None)
        async with self._call():
            # the copy this object read or listed at that version, else a GET
            current: str | bytes | None = None
            for copy in (seen, listed):
                if copy is not None and _opaque(copy[0]) == _opaque(if_match):
                    current = copy[1]
                    break
            if current is None:
                current = await self._current(remote_id)
            response = await self._request(
                "PUT",
                self._url(remote_id),
                content=to_ical(event, keep=current),
                headers={"If-Match": if_match, "Content-Type": _ICS},
            )
            if response.status_code in (200, 201, 204):
                return _etag(response)
            raise await self._write_error(response, remote_id)

    async def _current(self, remote_id: str) -> bytes:
        """The server's copy of ``remote_id``, to rewrite.

        Its ETag is not compared with the write's ``If-Match``: servers send
        one representation's ETag on GET and another in a multistatus (a
        compressed body's ``-gzip`` suffix), and the ``PUT``'s ``If-Match``
        refuses the write anyway when the item really changed.

        Raises:
            ItemNotFound: the item is gone.
        """
        response = await self._request(
            "GET", self._url(remote_id), headers={"Accept-Encoding": "identity"}
        )
        if response.status_code != 200:
            raise await self._write_error(response, remote_id)
        return response.content

    async def delete(self, remote_id: str, *, if_match: str, notify: Notify) -> None:
        self._writable()
        self._kept.pop(remote_id, None)
        self._read.pop(remote_id, None)
        async with self._call():
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
        limit: int = MAX_BODY_BYTES,
    ) -> _Reply:
        """One request on the object's client; the body read in full, at most
        ``limit`` bytes (``_TooLarge`` beyond)."""
        all_headers = dict(headers or {})
        if content is not None and "Content-Type" not in all_headers:
            all_headers["Content-Type"] = _XML
        try:
            async with self._http().stream(
                method,
                url,
                content=content,
                headers=all_headers,
                auth=self._auth,
            ) as response:
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise _TooLarge(
                            f"{self._what} sent more than "
                            f"{limit // (1024 * 1024)} MiB for one request."
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
            return RateLimited(
                parse_retry_after(response.headers.get("Retry-After")),
                f"{self._what} asks crmflow to slow down (HTTP 429); the sync "
                "tries again later.",
            )
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


def _opaque(etag: str) -> str:
    """An ETag's opaque part: one server may write the same tag weak or strong,
    quoted or not, in a header and in a multistatus."""
    return etag.strip().removeprefix("W/").strip('"')


def _calendar_data(props: Mapping[str, Element]) -> str | None:
    """The ``C:calendar-data`` text of a response's found props."""
    data = props.get(_tag(CALDAV, "calendar-data"))
    if data is None or not data.text:
        return None
    return data.text


def _text(element: Element | None) -> str | None:
    if element is None or element.text is None:
        return None
    value = element.text.strip()
    return value or None


__all__ = [
    "DEFAULT_GET_MANY_LIMIT",
    "MAX_REPORT_BYTES",
    "MAX_SYNC_PAGES",
    "CalDAVCalendar",
]
