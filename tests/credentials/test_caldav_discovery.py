"""CalDAV discovery against a real Radicale (RFC 6764 well-known redirect ->
current-user-principal -> calendar-home-set -> calendars), and every way it
can fail, each as its own error.

A few redirect and parsing cases use ``httpx.MockTransport`` (no server can
be made to misbehave that way on purpose); everything else talks to real
servers on loopback.
"""

from __future__ import annotations

import httpx
import pytest

from crmflow.domain.secret import Secret
from crmflow.errors import ValidationFailed
from crmflow.providers.base import (
    ConnectionCheckFailed,
    HostUnreachable,
    NotAServer,
    TlsFailure,
    WrongCredentials,
)
from crmflow.providers.caldav import calendar_preset, discover, start_url

pytestmark = pytest.mark.servers


def _alice(radicale):
    return "alice", Secret(radicale.users["alice"])


async def test_discovery_from_the_server_root_finds_event_calendars(radicale):
    account = await discover(radicale.url, *_alice(radicale))

    assert account.principal_url == radicale.url + "alice/"
    assert account.home_set_urls == (radicale.url + "alice/",)
    # "Chores" (VTODO only) and "Contacts" (an address book) are not offered
    assert [(c.name, c.components) for c in account.calendars] == [
        ("Office", ("VEVENT",))
    ]
    work = account.calendars[0]
    assert work.url == radicale.url + "alice/office/"
    assert work.ctag
    assert work.sync_token
    log = radicale.log()
    # RFC 6764: the well-known URI was asked first and redirected
    assert "PROPFIND request for '/.well-known/caldav'" in log
    assert "Successful login: 'alice'" in log


async def test_discovery_from_a_principal_address(radicale):
    account = await discover(radicale.url + "alice/", *_alice(radicale))
    assert [c.name for c in account.calendars] == ["Office"]


async def test_an_account_without_calendars_still_connects(radicale):
    account = await discover(radicale.url, "bob", Secret(radicale.users["bob"]))
    assert account.principal_url == radicale.url + "bob/"
    assert account.calendars == ()


async def test_wrong_password(radicale):
    wrong = "not-alices-dav-password-3d"
    with pytest.raises(WrongCredentials, match="HTTP 401"):
        await discover(radicale.url, "alice", Secret(wrong))
    log = radicale.log()
    assert "Failed login attempt" in log
    assert wrong not in log


async def test_another_users_principal_is_refused(radicale):
    """owner_only rights: bob signs in fine but may not read alice's home."""
    with pytest.raises(ConnectionCheckFailed, match="HTTP 403"):
        await discover(radicale.url + "alice/", "bob", Secret(radicale.users["bob"]))


async def test_https_against_a_plain_http_port_is_a_tls_failure(radicale):
    url = radicale.url.replace("http://", "https://")
    with pytest.raises(TlsFailure, match=r"secure \(TLS\) connection failed"):
        await discover(url, *_alice(radicale))


async def test_untrusted_certificate_then_trusted_with_extra_ca(radicale_tls, tls_cert):
    credentials = ("alice", Secret(radicale_tls.users["alice"]))
    with pytest.raises(TlsFailure, match="certificate is not trusted"):
        await discover(radicale_tls.url, *credentials)

    account = await discover(
        radicale_tls.url, *credentials, extra_ca_file=tls_cert.cert_file
    )
    assert account.principal_url == radicale_tls.url + "alice/"


async def test_closed_port_is_unreachable(closed_port):
    with pytest.raises(HostUnreachable, match="connection was refused"):
        await discover(f"http://127.0.0.1:{closed_port}/", "alice", Secret("pw"))


async def test_a_web_site_answering_404_is_not_a_caldav_server(html_server):
    with pytest.raises(NotAServer, match="HTTP 404") as caught:
        await discover(html_server.url, "alice", Secret("pw"))
    # both RFC 6764 candidates were tried
    assert "/.well-known/caldav" in caught.value.message


async def test_a_web_page_answering_200_is_not_a_caldav_server(html_server):
    with pytest.raises(NotAServer, match="HTTP 200"):
        await discover(html_server.url + "page/", "alice", Secret("pw"))


async def test_an_xml_bomb_is_refused(html_server):
    with pytest.raises(NotAServer, match="malformed or unsafe XML"):
        await discover(html_server.url + "bomb/", "alice", Secret("pw"))


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://caldav.example.com/", "in the clear"),
        ("https://alice:secret@caldav.example.com/", "own fields"),
        ("ftp://caldav.example.com/", "not a server address"),
    ],
)
async def test_unsafe_or_malformed_addresses_are_refused_before_connecting(
    url, message
):
    with pytest.raises(ValidationFailed, match=message):
        await discover(url, "alice", Secret("pw"))


async def test_a_redirect_from_https_to_http_is_not_followed():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(301, headers={"Location": "http://evil.example.com/"})

    with pytest.raises(TlsFailure, match="redirected from https to plain http"):
        await discover(
            "https://caldav.example.com/dav/",
            "alice",
            Secret("pw"),
            transport=httpx.MockTransport(handler),
        )
    assert seen == ["https://caldav.example.com/dav/"]


async def test_redirect_loops_end():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": "/again/"})

    with pytest.raises(NotAServer, match="redirected more than"):
        await discover(
            "https://caldav.example.com/dav/",
            "alice",
            Secret("pw"),
            transport=httpx.MockTransport(handler),
        )


def test_start_urls_of_presets():
    icloud = calendar_preset("icloud")
    nextcloud = calendar_preset("nextcloud")
    assert start_url(icloud, None) == "https://caldav.icloud.com/"
    assert (
        start_url(nextcloud, "cloud.example.com")
        == "https://cloud.example.com/remote.php/dav/"
    )
    # a full DAV address is used as given
    assert (
        start_url(nextcloud, "https://example.com/nc/remote.php/dav/")
        == "https://example.com/nc/remote.php/dav/"
    )
    with pytest.raises(ValidationFailed, match="Nextcloud needs your server"):
        start_url(nextcloud, None)
