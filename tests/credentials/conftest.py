"""Fixtures of the credential-connection tests: settings that trust the test
servers' certificate, a web server that is not CalDAV, and a closed port.

The real servers (Dovecot, aiosmtpd, Radicale) come from ``tests/servers``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from crmflow.config import Settings
from tests.servers.net import LOOPBACK, free_port
from tests.servers.tls import TestCert

#: a DTD with nested entities ("billion laughs"): safe parsers refuse it
XML_BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">]>
<d:multistatus xmlns:d="DAV:"><d:response><d:href>&lol2;</d:href></d:response>
</d:multistatus>"""


@pytest.fixture
def settings(settings: Settings, tls_cert: TestCert) -> Settings:
    """The app's settings, trusting the test servers' self-signed certificate."""
    return settings.model_copy(update={"extra_ca_file": tls_cert.cert_file})


class _NotCalDAV(BaseHTTPRequestHandler):
    """Answers every method like an ordinary web site.

    ``/page/...``: 200 with an HTML page; ``/bomb/...``: 207 with an XML bomb;
    anything else: 404 with an HTML page.
    """

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path.startswith("/page/"):
            status, kind, body = 200, "text/html", b"<html><body>Welcome</body></html>"
        elif self.path.startswith("/bomb/"):
            status, kind, body = 207, "application/xml", XML_BOMB
        else:
            status, kind, body = (
                404,
                "text/html",
                b"<html><body>Not found</body></html>",
            )
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PROPFIND = do_OPTIONS = do_REPORT = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output clean


@dataclass(frozen=True)
class WebServer:
    url: str


@pytest.fixture(scope="session")
def html_server() -> Iterator[WebServer]:
    """A plain HTTP server on loopback that is not a CalDAV server."""
    server = ThreadingHTTPServer((LOOPBACK, 0), _NotCalDAV)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield WebServer(f"http://{LOOPBACK}:{server.server_address[1]}/")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    return free_port()
