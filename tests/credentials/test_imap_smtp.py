"""IMAP sign-in against a real Dovecot, SMTP AUTH against real aiosmtpd servers:
every security mode, and each failure reported as its own error.

Outcomes are checked on the server side too: Dovecot's auth log and the SMTP
servers' record of AUTH attempts show what really happened on the wire.
"""

from __future__ import annotations

import pytest

from crmflow.domain.secret import Secret
from crmflow.errors import ValidationFailed
from crmflow.providers.base import (
    HostUnreachable,
    NotAServer,
    TlsFailure,
    WrongCredentials,
)
from crmflow.providers.imap import MailServer, Security, verify_imap, verify_smtp

pytestmark = pytest.mark.servers

ALICE = "alice@example.test"
CAROL = "carol@example.test"  # non-ASCII password


def _login_lines(log: str, user: str) -> list[str]:
    return [line for line in log.splitlines() if f"Login: user=<{user}>" in line]


# ----------------------------------------------------------------------- IMAP


@pytest.mark.parametrize(
    ("port_attr", "security"),
    [("imaps_port", Security.TLS), ("imap_port", Security.STARTTLS)],
)
async def test_imap_sign_in_over_tls(dovecot, port_attr, security):
    server = MailServer(dovecot.host, getattr(dovecot, port_attr), security)
    before = len(_login_lines(dovecot.log(), ALICE))

    login = await verify_imap(
        server,
        ALICE,
        Secret(dovecot.users[ALICE]),
        extra_ca_file=dovecot.cert.cert_file,
    )

    assert {"IMAP4REV1", "IDLE"} <= login.capabilities
    lines = _login_lines(dovecot.log(), ALICE)
    assert len(lines) == before + 1
    assert "TLS" in lines[-1]  # Dovecot saw an encrypted session


async def test_imap_plaintext_is_allowed_on_loopback_only(dovecot):
    server = MailServer(dovecot.host, dovecot.imap_port, Security.NONE)
    login = await verify_imap(server, ALICE, Secret(dovecot.users[ALICE]))
    assert "IMAP4REV1" in login.capabilities

    remote = MailServer("imap.example.com", 143, Security.NONE)
    with pytest.raises(ValidationFailed, match="only to this machine"):
        await verify_imap(remote, ALICE, Secret("whatever"))


async def test_imap_non_ascii_password_signs_in(dovecot):
    server = MailServer(dovecot.host, dovecot.imaps_port, Security.TLS)
    await verify_imap(
        server,
        CAROL,
        Secret(dovecot.users[CAROL]),
        extra_ca_file=dovecot.cert.cert_file,
    )
    assert "method=PLAIN" in _login_lines(dovecot.log(), CAROL)[-1]


async def test_imap_wrong_password(dovecot):
    server = MailServer(dovecot.host, dovecot.imaps_port, Security.TLS)
    wrong = "not-alices-password-81f"

    with pytest.raises(WrongCredentials, match="refused the user name or password"):
        await verify_imap(
            server, ALICE, Secret(wrong), extra_ca_file=dovecot.cert.cert_file
        )

    log = dovecot.log()
    assert f"passwd-file({ALICE},127.0.0.1" in log
    assert "Password mismatch" in log
    assert wrong not in log


async def test_imap_untrusted_certificate_is_a_tls_failure(dovecot):
    """The system trust store does not know the self-signed certificate."""
    pw = Secret(dovecot.users[ALICE])
    with pytest.raises(TlsFailure, match="certificate is not trusted"):
        await verify_imap(
            MailServer(dovecot.host, dovecot.imaps_port, Security.TLS), ALICE, pw
        )
    with pytest.raises(TlsFailure, match="certificate is not trusted"):
        await verify_imap(
            MailServer(dovecot.host, dovecot.imap_port, Security.STARTTLS), ALICE, pw
        )


async def test_imap_implicit_tls_against_a_plain_port_is_a_tls_failure(dovecot):
    server = MailServer(dovecot.host, dovecot.imap_port, Security.TLS)
    with pytest.raises(TlsFailure, match=r"secure \(TLS\) connection failed"):
        await verify_imap(
            server,
            ALICE,
            Secret(dovecot.users[ALICE]),
            extra_ca_file=dovecot.cert.cert_file,
        )


async def test_imap_closed_port_is_unreachable(closed_port):
    server = MailServer("127.0.0.1", closed_port, Security.NONE)
    with pytest.raises(HostUnreachable, match="connection was refused"):
        await verify_imap(server, ALICE, Secret("pw"))


async def test_imap_against_an_smtp_server_is_not_a_server(smtp_server):
    server = MailServer(smtp_server.host, smtp_server.plain_port, Security.NONE)
    with pytest.raises(NotAServer, match="did not answer like an IMAP server"):
        await verify_imap(server, ALICE, Secret("pw"))


async def test_imap_against_a_silent_server_is_not_a_server(html_server):
    """A web server waits for a request and sends no greeting."""
    port = int(html_server.url.rsplit(":", 1)[1].strip("/"))
    server = MailServer("127.0.0.1", port, Security.NONE)
    with pytest.raises(NotAServer, match="no IMAP greeting"):
        await verify_imap(server, ALICE, Secret("pw"), timeout_s=0.5)


# ----------------------------------------------------------------------- SMTP


@pytest.mark.parametrize(
    ("port_attr", "security", "tls"),
    [
        ("tls_port", Security.TLS, True),
        ("starttls_port", Security.STARTTLS, True),
        ("plain_port", Security.NONE, False),
    ],
)
async def test_smtp_auth(smtp_server, port_attr, security, tls):
    server = MailServer(smtp_server.host, getattr(smtp_server, port_attr), security)
    before = len(smtp_server.attempts_of(ALICE))

    await verify_smtp(
        server,
        ALICE,
        Secret(smtp_server.users[ALICE]),
        extra_ca_file=smtp_server.cert.cert_file,
    )

    attempts = smtp_server.attempts_of(ALICE)[before:]
    assert [(a.accepted, a.tls) for a in attempts] == [(True, tls)]
    assert smtp_server.messages == []  # a check sends nothing


async def test_smtp_non_ascii_password(smtp_server):
    server = MailServer(smtp_server.host, smtp_server.tls_port, Security.TLS)
    await verify_smtp(
        server,
        CAROL,
        Secret(smtp_server.users[CAROL]),
        extra_ca_file=smtp_server.cert.cert_file,
    )
    assert smtp_server.attempts_of(CAROL)[-1].accepted


async def test_smtp_wrong_password(smtp_server):
    server = MailServer(smtp_server.host, smtp_server.tls_port, Security.TLS)
    before = len(smtp_server.attempts_of(ALICE))

    with pytest.raises(WrongCredentials, match="535"):
        await verify_smtp(
            server,
            ALICE,
            Secret("not-alices-password-81f"),
            extra_ca_file=smtp_server.cert.cert_file,
        )

    attempts = smtp_server.attempts_of(ALICE)[before:]
    assert attempts
    assert not any(a.accepted for a in attempts)


async def test_smtp_tls_failures(smtp_server):
    pw = Secret(smtp_server.users[ALICE])
    ca = smtp_server.cert.cert_file
    host = smtp_server.host
    # implicit TLS against a plain port
    with pytest.raises(TlsFailure, match=r"secure \(TLS\) connection failed"):
        await verify_smtp(
            MailServer(host, smtp_server.plain_port, Security.TLS),
            ALICE,
            pw,
            extra_ca_file=ca,
        )
    # the certificate is not trusted (implicit TLS and STARTTLS)
    for port, security in (
        (smtp_server.tls_port, Security.TLS),
        (smtp_server.starttls_port, Security.STARTTLS),
    ):
        with pytest.raises(TlsFailure, match="certificate is not trusted"):
            await verify_smtp(MailServer(host, port, security), ALICE, pw)
    # STARTTLS asked for, but the server does not offer it
    with pytest.raises(TlsFailure, match="does not offer STARTTLS"):
        await verify_smtp(
            MailServer(host, smtp_server.plain_port, Security.STARTTLS),
            ALICE,
            pw,
            extra_ca_file=ca,
        )
    # a server that offers AUTH only after STARTTLS, used without it
    with pytest.raises(TlsFailure, match="only after"):
        await verify_smtp(
            MailServer(host, smtp_server.starttls_port, Security.NONE), ALICE, pw
        )


async def test_smtp_closed_port_is_unreachable(closed_port):
    server = MailServer("127.0.0.1", closed_port, Security.NONE)
    with pytest.raises(HostUnreachable, match="connection was refused"):
        await verify_smtp(server, ALICE, Secret("pw"))


async def test_smtp_against_an_imap_server_is_not_a_server(dovecot):
    server = MailServer(dovecot.host, dovecot.imap_port, Security.NONE)
    with pytest.raises(NotAServer, match="did not answer like an SMTP server"):
        await verify_smtp(server, ALICE, Secret("pw"))


async def test_smtp_plaintext_to_a_remote_host_is_refused_before_connecting():
    server = MailServer("smtp.example.com", 25, Security.NONE)
    with pytest.raises(ValidationFailed, match="in the clear"):
        await verify_smtp(server, ALICE, Secret("pw"))
