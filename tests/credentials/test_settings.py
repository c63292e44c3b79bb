"""``CRMFLOW_EXTRA_CA_FILE``: checked at start-up, added to (never replacing)
the system's trust store."""

from __future__ import annotations

import os
import socket
import ssl
import threading

import httpx
import pytest

from crmflow.config import load_settings
from crmflow.errors import ConfigError
from crmflow.providers._tls import client_context


def test_a_missing_ca_file_stops_start_up(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CRMFLOW_EXTRA_CA_FILE", str(tmp_path / "nope.pem"))
    with pytest.raises(ConfigError, match="CRMFLOW_EXTRA_CA_FILE"):
        load_settings()
    monkeypatch.setenv("CRMFLOW_EXTRA_CA_FILE", "")
    assert load_settings().extra_ca_file is None


def test_the_extra_ca_is_trusted_besides_the_system_store(tls_cert):
    system = client_context(None)
    extended = client_context(tls_cert.cert_file)
    assert extended.verify_mode is ssl.CERT_REQUIRED
    assert extended.check_hostname
    assert len(extended.get_ca_certs()) == len(system.get_ca_certs()) + 1


def test_a_file_without_certificates_is_a_config_error(tmp_path):
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="cannot be loaded"):
        client_context(bogus)


def test_a_context_is_made_once_per_ca_file_until_the_file_changes(tls_cert, tmp_path):
    # each CalDAV run and mailbox connection asks for one: the CA store is
    # read once, and a CA file replaced on disk is read again
    assert client_context(None) is client_context(None)
    ca = tmp_path / "ca.pem"
    ca.write_bytes(tls_cert.cert_file.read_bytes())
    first = client_context(ca)
    assert client_context(ca) is first
    assert len(first.get_ca_certs()) == len(client_context(None).get_ca_certs()) + 1

    ca.write_text("not a certificate any more\n")
    with pytest.raises(ConfigError, match="cannot be loaded"):
        client_context(ca)
    ca.write_bytes(tls_cert.cert_file.read_bytes())
    # the same size as the first file: its modification time tells it apart
    written = ca.stat().st_mtime_ns + 1_000_000_000
    os.utime(ca, ns=(written, written))
    again = client_context(ca)
    assert again is not first
    assert len(again.get_ca_certs()) == len(first.get_ca_certs())


def test_a_mail_connection_offers_no_http_after_an_https_request(tls_cert):
    # httpcore sets ALPN "http/1.1" on the context of every HTTPS connection
    # it makes; a mail connection with the same CA file must not offer it
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tls_cert.cert_file, tls_cert.key_file)
    server.set_alpn_protocols(["http/1.1", "imap"])
    offered: list[str | None] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def accept(times: int) -> None:
            for _ in range(times):
                conn, _ = listener.accept()
                try:
                    with server.wrap_socket(conn, server_side=True) as tls:
                        offered.append(tls.selected_alpn_protocol())
                except (ssl.SSLError, OSError):
                    conn.close()

        thread = threading.Thread(target=accept, args=(2,))
        thread.start()
        http_ctx = client_context(tls_cert.cert_file, for_http=True)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"https://127.0.0.1:{port}/", verify=http_ctx, timeout=5)
        mail_ctx = client_context(tls_cert.cert_file)
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            mail_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as mail,
        ):
            assert mail.selected_alpn_protocol() is None
        thread.join(5)
    # the HTTPS request did offer it (so the check above can fail)
    assert offered == ["http/1.1", None]
