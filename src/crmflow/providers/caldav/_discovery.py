"""CalDAV account discovery: from a server address to the user's calendars.

Algorithm (each step one ``PROPFIND`` with HTTP Basic auth):

1. **Context path** (RFC 6764 §5-6): an address with a path is used as given;
   a bare host starts at ``/.well-known/caldav`` (its redirect is followed) and
   falls back to ``/``. Depth 0, asking for ``DAV:current-user-principal``.
2. **Principal** (RFC 5397): the ``current-user-principal`` href. A server
   that answers ``calendar-home-set`` on the context path itself is taken as
   that principal.
3. **Calendar home** (RFC 4791 §6.2.1): Depth 0 on the principal for
   ``C:calendar-home-set`` (and RFC 6638 ``C:calendar-user-address-set`` for
   the account's email address).
4. **Calendars** (RFC 4791 §4.2, §5.2.3): Depth 1 on each home; members whose
   ``DAV:resourcetype`` holds ``C:calendar`` and whose
   ``C:supported-calendar-component-set`` allows ``VEVENT`` (absent means every
   component) are kept, with ``DAV:displayname``, ``CS:getctag``
   (calendarserver.org), ``DAV:sync-token`` (RFC 6578) and Apple's
   ``calendar-color`` where offered.

The server is untrusted: XML is parsed with ``defusedxml`` (no DTDs, entities
or external references), bodies are capped at :data:`MAX_BODY_BYTES`,
redirects at :data:`MAX_REDIRECTS`, and a redirect may not downgrade https to
http. Plain ``http://`` is allowed only to loopback hosts, like unencrypted
mail (``providers/_tls.py``): Basic auth would otherwise cross the network in
the clear.

Failures are the ``ConnectionCheckFailed`` tree: 401 -> ``WrongCredentials``;
TLS errors -> ``TlsFailure``; DNS / refused / connect timeout ->
``HostUnreachable``; anything that is not WebDAV multistatus where CalDAV must
answer (404, 405, HTML, broken XML, no principal, no calendar home) ->
``NotAServer``.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urljoin, urlsplit

import httpx
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError, fromstring

from crmflow.domain.secret import Secret
from crmflow.errors import ValidationFailed
from crmflow.providers._tls import (
    cause,
    client_context,
    network_cause,
    require_safe_transport,
    tls_failure,
    unreachable,
)
from crmflow.providers.base import (
    ConnectionCheckFailed,
    HostUnreachable,
    NotAServer,
    TlsFailure,
    WrongCredentials,
)

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

    from crmflow.providers.caldav.presets import CalendarPreset

_log = logging.getLogger(__name__)

#: timeout of each request of a discovery (connect, read, write), in seconds
DEFAULT_TIMEOUT_S = 20.0
#: redirects followed per request (RFC 6764 well-known redirects are one hop)
MAX_REDIRECTS = 5
#: largest PROPFIND answer read, in bytes (a home with hundreds of calendars is
#: far below this)
MAX_BODY_BYTES = 4 * 1024 * 1024

DAV = "DAV:"
CALDAV = "urn:ietf:params:xml:ns:caldav"
CALENDARSERVER = "http://calendarserver.org/ns/"
APPLE_ICAL = "http://apple.com/ns/ical/"

_XML = "application/xml; charset=utf-8"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})

_CONTEXT_QUERY = b"""<?xml version="1.0" encoding="utf-8"?>
<d:propfind xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">
  <d:prop><d:current-user-principal/><d:resourcetype/><c:calendar-home-set/></d:prop>
</d:propfind>"""

_PRINCIPAL_QUERY = b"""<?xml version="1.0" encoding="utf-8"?>
<d:propfind xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">
  <d:prop><c:calendar-home-set/><c:calendar-user-address-set/><d:displayname/></d:prop>
</d:propfind>"""

_CALENDARS_QUERY = b"""<?xml version="1.0" encoding="utf-8"?>
<d:propfind xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"
    xmlns:cs="http://calendarserver.org/ns/" xmlns:ical="http://apple.com/ns/ical/">
  <d:prop>
    <d:resourcetype/><d:displayname/><c:supported-calendar-component-set/>
    <cs:getctag/><d:sync-token/><ical:calendar-color/>
  </d:prop>
</d:propfind>"""


@dataclass(frozen=True, slots=True)
class DiscoveredCalendar:
    """A calendar collection that can hold events."""

    #: absolute URL of the collection
    url: str
    #: ``DAV:displayname``, when the server has one
    name: str | None
    #: allowed components (``VEVENT``, ``VTODO``...); empty: the server did not say
    components: tuple[str, ...]
    #: ``CS:getctag``: changes whenever anything in the calendar changes
    ctag: str | None
    #: ``DAV:sync-token`` (RFC 6578) when the server supports sync-collection
    sync_token: str | None
    #: Apple ``calendar-color`` (``#RRGGBBAA``), when offered
    color: str | None


@dataclass(frozen=True, slots=True)
class CalDAVAccount:
    """Where a CalDAV account lives, as discovery found it."""

    #: the context path that named the principal (after redirects)
    context_url: str
    #: the user's principal (RFC 5397)
    principal_url: str
    #: the calendar homes (RFC 4791 §6.2.1)
    home_set_urls: tuple[str, ...]
    #: first ``mailto:`` of ``calendar-user-address-set`` (RFC 6638), if any
    email: str | None
    #: event calendars, in the server's order
    calendars: tuple[DiscoveredCalendar, ...]


@dataclass(frozen=True, slots=True)
class _DavResponse:
    """One ``DAV:response`` of a multistatus: its URL and the props found (200)."""

    url: str
    props: dict[str, Element]


def _tag(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def normalize_url(url: str) -> str:
    """``url`` with ``https://`` added when it has no scheme.

    Raises:
        ValidationFailed: not an http(s) address with a host, or it carries a
            user name or password (those go in their own fields, never into the
            stored, unencrypted address).
    """
    text = url.strip()
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValidationFailed(
            f"{url!r} is not a server address; enter e.g. https://caldav.example.com/."
        )
    if parts.username is not None or parts.password is not None:
        raise ValidationFailed(
            "Put the user name and password in their own fields, not in the "
            "server address."
        )
    path = parts.path or "/"
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme.lower()}://{parts.netloc}{path}{query}"


def start_url(preset: CalendarPreset | None, url: str | None) -> str:
    """Where discovery starts for a preset and/or a user-given address.

    A preset with a fixed URL wins; a preset with a ``dav_path`` (Nextcloud)
    appends it to a server address given without a path.

    Raises:
        ValidationFailed: no address where one is needed, or a malformed one.
    """
    if preset is not None and preset.url is not None:
        return preset.url
    if not url or not url.strip():
        needs = f"{preset.name} needs" if preset else "Enter"
        raise ValidationFailed(
            f"{needs} your server's address, e.g. https://cloud.example.com."
        )
    normalized = normalize_url(url)
    parts = urlsplit(normalized)
    if preset is not None and preset.dav_path and parts.path in ("", "/"):
        return urljoin(normalized, preset.dav_path)
    return normalized


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _same_resource(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.netloc.lower(), unquote(pa.path).rstrip("/")) == (
        pb.netloc.lower(),
        unquote(pb.path).rstrip("/"),
    )


def _text(element: Element | None) -> str | None:
    if element is None or element.text is None:
        return None
    value = element.text.strip()
    return value or None


def _hrefs(element: Element | None) -> list[str]:
    if element is None:
        return []
    return [h.text.strip() for h in element.iter(_tag(DAV, "href")) if h.text]


class _Dav:
    """PROPFIND with redirects, size limits and error translation."""

    def __init__(
        self, client: httpx.AsyncClient, auth: httpx.Auth, what: str, timeout_s: float
    ) -> None:
        self._client = client
        self._auth = auth
        self.what = what
        self._timeout_s = timeout_s

    def _check_target(self, url: str, previous: str | None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise NotAServer(
                f"{self.what} redirected to an address that is not http(s)."
            )
        was_https = previous is not None and urlsplit(previous).scheme == "https"
        if was_https and parts.scheme != "https":
            raise TlsFailure(
                f"{self.what} redirected from https to plain http; crmflow does not "
                "follow that, since your password would then cross the network "
                "unencrypted."
            )
        require_safe_transport(parts.hostname, parts.scheme == "https", self.what)

    async def propfind(
        self, url: str, depth: str, query: bytes
    ) -> tuple[str, list[_DavResponse]]:
        """The final URL (after redirects) and the multistatus responses.

        Raises:
            WrongCredentials, TlsFailure, HostUnreachable, NotAServer,
            ConnectionCheckFailed: see the module docstring.
        """
        previous: str | None = None
        for _hop in range(MAX_REDIRECTS + 1):
            self._check_target(url, previous)
            try:
                async with self._client.stream(
                    "PROPFIND",
                    url,
                    content=query,
                    headers={"Depth": depth, "Content-Type": _XML},
                    auth=self._auth,
                ) as response:
                    status = response.status_code
                    if status in _REDIRECTS:
                        location = response.headers.get("Location")
                        if not location:
                            raise NotAServer(
                                f"{self.what} sent a redirect without a target."
                            )
                        previous, url = url, urljoin(url, location)
                        continue
                    if status != 207:
                        raise self._status_error(status, url)
                    body = await self._read(response)
            except httpx.TransportError as exc:
                raise self._transport_error(exc) from None
            return url, self._multistatus(body, url)
        raise NotAServer(
            f"{self.what} redirected more than {MAX_REDIRECTS} times; check the address."
        )

    async def _read(self, response: httpx.Response) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise NotAServer(
                    f"{self.what} sent more than {MAX_BODY_BYTES // (1024 * 1024)} MiB "
                    "for one discovery step; this is not a CalDAV answer."
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _status_error(self, status: int, url: str) -> ConnectionCheckFailed:
        path = urlsplit(url).path or "/"
        if status == 401:
            return WrongCredentials(
                f"{self.what} refused the user name or password (HTTP 401). Check "
                "both; iCloud and Fastmail need an app-specific password."
            )
        if status == 403:
            return ConnectionCheckFailed(
                f"{self.what} accepted the sign-in but refuses access to {path} "
                "(HTTP 403); check the address, or ask the server's administrator."
            )
        if status >= 500:
            return ConnectionCheckFailed(
                f"{self.what} failed with HTTP {status} at {path}; try again later."
            )
        return NotAServer(
            f"{self.what} answered HTTP {status} at {path} instead of WebDAV data: "
            "this address is not a CalDAV server. Check the URL (for Nextcloud, "
            "e.g. https://cloud.example.com/remote.php/dav/)."
        )

    def _transport_error(self, exc: httpx.TransportError) -> ConnectionCheckFailed:
        ssl_error = cause(exc, ssl.SSLError)
        if ssl_error is not None:
            return tls_failure(
                self.what,
                ssl_error,
                "The port may not use TLS: check the port, or use http:// for a "
                "server on this machine without TLS.",
            )
        if isinstance(exc, httpx.ConnectTimeout):
            return unreachable(self.what, TimeoutError(), self._timeout_s)
        if isinstance(exc, httpx.ConnectError):
            os_error = network_cause(exc)
            if os_error is not None:
                return unreachable(self.what, os_error, self._timeout_s)
            return HostUnreachable(
                f"{self.what}: the server could not be reached; check the address."
            )
        if isinstance(exc, httpx.TimeoutException):
            return NotAServer(
                f"{self.what}: the connection opened, but no HTTP answer came within "
                f"{self._timeout_s:g} s; check the address and port."
            )
        return NotAServer(
            f"{self.what} did not answer like a web server ({type(exc).__name__}). "
            "If it uses TLS, the address must start with https://."
        )

    def _multistatus(self, body: bytes, url: str) -> list[_DavResponse]:
        try:
            root = fromstring(body)
        except (ParseError, DefusedXmlException):
            raise NotAServer(
                f"{self.what} sent malformed or unsafe XML; this is not a CalDAV answer."
            ) from None
        if root.tag != _tag(DAV, "multistatus"):
            raise NotAServer(f"{self.what} sent XML that is not a WebDAV multistatus.")
        out: list[_DavResponse] = []
        for node in root.findall(_tag(DAV, "response")):
            href = _text(node.find(_tag(DAV, "href")))
            if href is None:
                continue
            props: dict[str, Element] = {}
            for propstat in node.findall(_tag(DAV, "propstat")):
                status = (_text(propstat.find(_tag(DAV, "status"))) or "").split()
                if len(status) < 2 or status[1] != "200":
                    continue
                prop = propstat.find(_tag(DAV, "prop"))
                if prop is not None:
                    props.update({child.tag: child for child in prop})
            out.append(_DavResponse(urljoin(url, href), props))
        return out


def _own_response(responses: Iterable[_DavResponse], url: str) -> _DavResponse | None:
    items = list(responses)
    for item in items:
        if _same_resource(item.url, url):
            return item
    return items[0] if len(items) == 1 else None


async def _find_principal(dav: _Dav, candidates: list[str]) -> tuple[str, str]:
    """(context URL, principal URL) from the first candidate that names one."""
    failures: list[str] = []
    for candidate in candidates:
        try:
            final, responses = await dav.propfind(candidate, "0", _CONTEXT_QUERY)
        except NotAServer as exc:
            failures.append(exc.message)
            continue
        own = _own_response(responses, final)
        if own is None:
            failures.append(f"{dav.what} sent no answer for {final}.")
            continue
        principal = own.props.get(_tag(DAV, "current-user-principal"))
        if (
            principal is not None
            and principal.find(_tag(DAV, "unauthenticated")) is not None
        ):
            raise WrongCredentials(
                f"{dav.what} did not accept the sign-in (it calls you "
                "unauthenticated). Check the user name and password."
            )
        hrefs = _hrefs(principal)
        if hrefs:
            return final, urljoin(final, hrefs[0])
        if _tag(CALDAV, "calendar-home-set") in own.props:
            return final, final
        failures.append(
            f"{dav.what} speaks WebDAV at {urlsplit(final).path or '/'} but does not "
            "name your CalDAV principal (RFC 5397)."
        )
    raise NotAServer(
        " ".join(dict.fromkeys(failures))
        + " Check the address: it must point at a CalDAV server."
    )


async def _principal(dav: _Dav, url: str) -> tuple[tuple[str, ...], str | None]:
    """The principal's calendar homes and email address."""
    final, responses = await dav.propfind(url, "0", _PRINCIPAL_QUERY)
    own = _own_response(responses, final)
    props = own.props if own else {}
    home_hrefs = _hrefs(props.get(_tag(CALDAV, "calendar-home-set")))
    homes = tuple(dict.fromkeys(urljoin(final, h) for h in home_hrefs))
    if not homes:
        raise NotAServer(
            f"{dav.what} names no calendar home for this account (RFC 4791 "
            "calendar-home-set): the account has no CalDAV calendars here, or the "
            "address is not a CalDAV server."
        )
    addresses = _hrefs(props.get(_tag(CALDAV, "calendar-user-address-set")))
    email = next(
        (a[len("mailto:") :] for a in addresses if a.lower().startswith("mailto:")),
        None,
    )
    return homes, email


def _calendar(item: _DavResponse) -> DiscoveredCalendar | None:
    kinds = item.props.get(_tag(DAV, "resourcetype"))
    if kinds is None or kinds.find(_tag(CALDAV, "calendar")) is None:
        return None
    component_set = item.props.get(_tag(CALDAV, "supported-calendar-component-set"))
    components: tuple[str, ...] = ()
    if component_set is not None:
        components = tuple(
            (comp.get("name") or "").upper()
            for comp in component_set.findall(_tag(CALDAV, "comp"))
        )
    if components and "VEVENT" not in components:
        return None  # a task list or journal: nothing crmflow can sync events to
    return DiscoveredCalendar(
        url=item.url,
        name=_text(item.props.get(_tag(DAV, "displayname"))),
        components=components,
        ctag=_text(item.props.get(_tag(CALENDARSERVER, "getctag"))),
        sync_token=_text(item.props.get(_tag(DAV, "sync-token"))),
        color=_text(item.props.get(_tag(APPLE_ICAL, "calendar-color"))),
    )


async def discover(
    url: str,
    username: str,
    password: Secret,
    *,
    extra_ca_file: Path | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    transport: httpx.AsyncBaseTransport | None = None,
) -> CalDAVAccount:
    """Sign in to a CalDAV server and find the user's event calendars.

    Read-only and idempotent. ``transport`` lets unit tests inject
    ``httpx.MockTransport``.

    Returns:
        The principal, calendar homes and event calendars (possibly none: an
        account without calendars is still a working account).

    Raises:
        ValidationFailed: a malformed address, or ``http://`` to a host that is
            not loopback.
        ConfigError: ``extra_ca_file`` cannot be loaded.
        WrongCredentials: the server refused the user name or password.
        TlsFailure: the certificate is not trusted, the handshake failed, or a
            redirect would downgrade to http.
        HostUnreachable: DNS failure, connection refused or timed out.
        NotAServer: the address answers, but not as a CalDAV server.
        ConnectionCheckFailed: 403 or a server error (try later).
    """
    start = normalize_url(url)
    what = f"CalDAV server {_origin(start)}"
    host = urlsplit(start).hostname or ""
    require_safe_transport(host, start.startswith("https://"), what)
    ctx = client_context(extra_ca_file, for_http=True)
    candidates = [start]
    if urlsplit(start).path in ("", "/"):
        candidates = [urljoin(start, "/.well-known/caldav"), start]
    async with httpx.AsyncClient(
        verify=ctx,
        timeout=httpx.Timeout(timeout_s),
        follow_redirects=False,
        transport=transport,
    ) as client:
        auth = httpx.BasicAuth(username, password.reveal())
        dav = _Dav(client, auth, what, timeout_s)
        context_url, principal_url = await _find_principal(dav, candidates)
        homes, email = await _principal(dav, principal_url)
        calendars: dict[str, DiscoveredCalendar] = {}
        for home in homes:
            home_final, members = await dav.propfind(home, "1", _CALENDARS_QUERY)
            for item in members:
                if _same_resource(item.url, home_final):
                    continue  # the home itself
                found = _calendar(item)
                if found is not None:
                    calendars.setdefault(found.url, found)
    _log.info("CalDAV discovery on %s found %d calendars", what, len(calendars))
    return CalDAVAccount(
        context_url=context_url,
        principal_url=principal_url,
        home_set_urls=homes,
        email=email,
        calendars=tuple(calendars.values()),
    )
