"""A real Radicale CalDAV server on 127.0.0.1 for the integration tests.

Recipe: ``real-servers.md`` §3 (``python -m radicale`` as a subprocess of this
interpreter, htpasswd users with plain passwords, ``[auth] delay = 0`` so a
refused password costs no time, ``[rights] type = owner_only``). Two fixtures,
each started at most once per session:

* ``radicale``: plain http. Seeds, through real CalDAV requests (MKCALENDAR /
  MKCOL), alice's event calendar "Office" (VEVENT), her task list "Chores"
  (VTODO only) and address book "Contacts" (not a calendar), so discovery
  tests can see what is kept and what is skipped. Bob has no collections.
* ``radicale_tls``: https with the self-signed certificate of
  ``tests/servers/tls.py``, to prove that an untrusted certificate is refused
  and a trusted one (``extra_ca_file``) works.

A missing Radicale skips locally and fails in CI
(:func:`tests.servers.require.missing_server`). Teardown sends SIGTERM to the
pid this module started and waits for the port to close.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.servers.net import LOOPBACK, free_port, wait_closed, wait_open
from tests.servers.require import missing_server
from tests.servers.tls import TestCert, tls_cert

#: ``tls_cert`` is re-exported so that loading this plugin provides it
__all__ = ["RadicaleServer", "tls_cert"]

#: the accounts (user -> password)
USERS: Mapping[str, str] = {"alice": "alice-dav-Pw-19fe", "bob": "bob-dav-Pw-0b77"}
#: a port picked as free can be taken before Radicale binds it: retry
START_ATTEMPTS = 3
#: how long teardown waits for SIGTERM to work before SIGKILL, in seconds
STOP_WAIT_S = 10

_MKCALENDAR = """<?xml version="1.0" encoding="utf-8"?>
<c:mkcalendar xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">
  <d:set><d:prop>
    <d:displayname>{name}</d:displayname>
    <c:supported-calendar-component-set><c:comp name="{component}"/></c:supported-calendar-component-set>
  </d:prop></d:set>
</c:mkcalendar>"""

_MKADDRESSBOOK = """<?xml version="1.0" encoding="utf-8"?>
<d:mkcol xmlns:d="DAV:" xmlns:card="urn:ietf:params:xml:ns:carddav">
  <d:set><d:prop>
    <d:resourcetype><d:collection/><card:addressbook/></d:resourcetype>
    <d:displayname>Contacts</d:displayname>
  </d:prop></d:set>
</d:mkcol>"""


@dataclass(frozen=True, slots=True)
class RadicaleServer:
    """A running Radicale and how to reach it."""

    #: ``http://127.0.0.1:<port>/`` (or https)
    url: str
    port: int
    users: Mapping[str, str]
    log_file: Path

    def log(self) -> str:
        """The server log so far."""
        return self.log_file.read_text(errors="replace")


def _config(base: Path, port: int, cert: TestCert | None) -> str:
    tls = (
        f"ssl = True\ncertificate = {cert.cert_file}\nkey = {cert.key_file}\n"
        if cert
        else ""
    )
    return f"""\
[server]
hosts = {LOOPBACK}:{port}
{tls}
[auth]
type = htpasswd
htpasswd_filename = {base}/users
htpasswd_encryption = plain
delay = 0

[rights]
type = owner_only

[storage]
filesystem_folder = {base}/collections

[web]
type = none

[logging]
level = info
"""


@contextlib.contextmanager
def _running(cert: TestCert | None) -> Iterator[RadicaleServer]:
    if importlib.util.find_spec("radicale") is None:
        missing_server("Radicale is not installed (uv pip install radicale)")
    base = Path(tempfile.mkdtemp(prefix="crmflow-radicale-"))
    try:
        (base / "users").write_text(
            "".join(f"{u}:{p}\n" for u, p in USERS.items()), encoding="utf-8"
        )
        log_file = base / "radicale.log"
        error = ""
        for _ in range(START_ATTEMPTS):
            port = free_port()
            config = base / "config"
            config.write_text(_config(base, port, cert))
            with log_file.open("ab") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "radicale", "--config", str(config)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            try:
                wait_open(
                    [port],
                    "Radicale",
                    process,
                    log=lambda: log_file.read_text(errors="replace"),
                )
            except RuntimeError as exc:
                error = str(exc)
                _stop(process, port)
                continue
            scheme = "https" if cert else "http"
            try:
                yield RadicaleServer(
                    f"{scheme}://{LOOPBACK}:{port}/", port, USERS, log_file
                )
            finally:
                _stop(process, port)
            return
        raise RuntimeError(f"Radicale did not start: {error}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _stop(process: subprocess.Popen[bytes], port: int) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    wait_closed([port])


def _seed(server: RadicaleServer) -> None:
    """alice: calendars "Office" (VEVENT) and "Chores" (VTODO), address book."""
    auth = ("alice", USERS["alice"])
    with httpx.Client(base_url=server.url, auth=auth, timeout=10) as client:
        for path, body, method in (
            (
                "alice/office/",
                _MKCALENDAR.format(name="Office", component="VEVENT"),
                "MKCALENDAR",
            ),
            (
                "alice/chores/",
                _MKCALENDAR.format(name="Chores", component="VTODO"),
                "MKCALENDAR",
            ),
            ("alice/contacts/", _MKADDRESSBOOK, "MKCOL"),
        ):
            response = client.request(method, path, content=body.encode())
            if response.status_code != 201:
                raise RuntimeError(
                    f"seeding Radicale: {method} {path} -> {response.status_code}"
                )


@pytest.fixture(scope="session")
def radicale() -> Iterator[RadicaleServer]:
    """Radicale over http with alice's seeded collections (session)."""
    with _running(None) as server:
        _seed(server)
        yield server


@pytest.fixture(scope="session")
def radicale_tls(tls_cert: TestCert) -> Iterator[RadicaleServer]:
    """Radicale over https with the self-signed test certificate (session)."""
    with _running(tls_cert) as server:
        yield server
