"""A real Dovecot IMAP server on 127.0.0.1 for the integration tests.

Recipe: ``real-servers.md`` §4 (Debian's ``dovecot-imapd``, a standalone config
given with ``-c``, nothing from ``/etc/dovecot``, no systemd). One instance per
test session:

* ``imap_port``: plaintext IMAP that offers ``STARTTLS`` (plaintext sign-in is
  allowed so that the ``none`` security mode can be tested on loopback);
* ``imaps_port``: implicit TLS, with the self-signed certificate of
  ``tests/servers/tls.py`` (trusted only by clients that load it);
* users in a ``passwd-file`` with PLAIN passwords (one of them non-ASCII),
  mail in Maildirs owned by ``nobody``;
* OAuth sign-in (``AUTHENTICATE XOAUTH2`` / ``OAUTHBEARER``) as Gmail's IMAP
  server does it: Dovecot's own ``oauth2`` passdb asks the sandbox's Google
  ``tokeninfo`` endpoint about each token and accepts it only when the token
  is live, names the signing-in user (``email``) and carries the full mailbox
  scope ``https://mail.google.com/`` (:data:`OAUTH_SCOPE`);
* ``auth_verbose`` on, so tests can read the server's own account of each
  sign-in (``Login: user=<...>``, ``Password mismatch``) from ``log_file``;
  ``auth_failure_delay = 0`` and the anvil auth penalty off, so that a
  refused password slows down no later sign-in;
* a ``Sent`` folder marked ``\\Sent`` (RFC 6154 SPECIAL-USE) once a client
  creates it (no account has one at first), and ``verbose_proctitle``, so a
  test can see in the process list which command (``IDLE``) a session runs;
* :meth:`DovecotServer.add_users` adds accounts while the server runs (the
  ``passwd-file`` is re-read when it changes), so a test can have mailboxes
  of its own; :meth:`DovecotServer.deliver` hands a message to
  ``dovecot-lda`` (local delivery, as an MTA would) and
  :meth:`DovecotServer.doveadm` runs ``doveadm`` on this instance.

Dovecot starts as root and drops privileges to ``dovenull`` / ``dovecot`` /
``nobody``, so its directory is created outside pytest's temp tree with mode
0755 (pytest resets ``/tmp/pytest-of-root`` to 0700 whenever another session
starts). A missing binary or OS user skips locally and fails in CI
(:func:`tests.servers.require.missing_server`). Teardown sends SIGTERM to the
master pid this fixture started, waits for both ports to close and removes the
directory.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from crmflow.sandbox.serve import SandboxServer
from tests.servers.net import (
    LOOPBACK,
    POLL_S,
    WAIT_S,
    free_port,
    wait_closed,
    wait_open,
)
from tests.servers.require import missing_server
from tests.servers.tls import TestCert, tls_cert

#: ``tls_cert`` is re-exported so that loading this plugin provides it
__all__ = ["DovecotServer", "tls_cert"]

#: Debian's binaries; override with CRMFLOW_DOVECOT_BIN (the dovecot binary)
DOVECOT = Path(os.environ.get("CRMFLOW_DOVECOT_BIN", "/usr/sbin/dovecot"))
#: local delivery agent and admin tool, beside the dovecot binary by default
LDA = Path(os.environ.get("CRMFLOW_DOVECOT_LDA", "/usr/lib/dovecot/dovecot-lda"))
DOVEADM = Path(os.environ.get("CRMFLOW_DOVEADM_BIN", "/usr/bin/doveadm"))
#: a delivery or doveadm call taking longer than this has hung, in seconds
TOOL_TIMEOUT_S = 30.0
#: pause between two checks whether Dovecot sees added accounts, in seconds
USER_POLL_S = 0.05
#: OS users and group Dovecot's config below refers to
OS_USERS = ("dovecot", "dovenull", "nobody")
MAIL_GROUP = "nogroup"
#: a port picked as free can be taken before Dovecot binds it: retry
START_ATTEMPTS = 3

#: the scope a token must carry for IMAP sign-in (Gmail's rule)
OAUTH_SCOPE = "https://mail.google.com/"

#: the accounts (address -> password); the last one needs UTF-8 sign-in
USERS: Mapping[str, str] = {
    "alice@example.test": "alice-imap-Pw-7c1e",
    "bob@example.test": "bob-imap-Pw-52aa",
    "carol@example.test": "cärol-pässwörd-ü9",
}


@dataclass(frozen=True, slots=True)
class DovecotServer:
    """A running Dovecot and how to reach it."""

    host: str
    #: plaintext IMAP offering STARTTLS
    imap_port: int
    #: implicit TLS (IMAPS)
    imaps_port: int
    #: address -> password
    users: Mapping[str, str]
    #: Dovecot's log (auth_verbose: one line per sign-in attempt)
    log_file: Path
    config_file: Path
    #: the certificate of the TLS listener (trust it to connect)
    cert: TestCert
    #: the ``passwd-file`` of every account (``users`` and added ones)
    passwd_file: Path | None = None
    #: where Dovecot checks OAuth access tokens (the token is appended)
    tokeninfo_url: str | None = None

    def log(self) -> str:
        """The server log so far."""
        return self.log_file.read_text(errors="replace")

    def passwords(self) -> dict[str, str]:
        """Every account (address -> password), added ones included."""
        if self.passwd_file is None:
            return dict(self.users)
        found: dict[str, str] = {}
        for line in self.passwd_file.read_text(encoding="utf-8").splitlines():
            user, _, rest = line.partition(":")
            if rest.startswith("{PLAIN}"):
                found[user] = rest.removeprefix("{PLAIN}").split(":", 1)[0]
        return found

    def add_users(self, accounts: Mapping[str, str]) -> None:
        """Add accounts (address -> password); returns once Dovecot knows them.

        The file is replaced in one rename, so Dovecot never reads half of it.
        Dovecot checks it for changes at most once a second, and sees a change
        of its size or of its mtime in whole seconds: so each change moves the
        mtime on by at least a second, and this waits until ``doveadm user``
        finds the last account. Adding many accounts at once costs one wait.

        Raises:
            ValueError: an address exists already or cannot be written.
            RuntimeError: Dovecot did not see the accounts in time.
        """
        if self.passwd_file is None:
            raise ValueError("this server has no passwd-file")
        if not accounts:
            return
        with _PASSWD_LOCK:
            text = self.passwd_file.read_text(encoding="utf-8")
            lines = []
            for address, password in accounts.items():
                if any(c in address + password for c in ":\n") or (
                    f"\n{address}:" in "\n" + text
                ):
                    raise ValueError(f"cannot add {address!r}")
                lines.append(f"{address}:{{PLAIN}}{password}::::::\n")
            stamp = max(int(self.passwd_file.stat().st_mtime) + 1, int(time.time()))
            fresh = self.passwd_file.with_suffix(".new")
            fresh.write_text(text + "".join(lines), encoding="utf-8")
            os.utime(fresh, (stamp, stamp))
            fresh.replace(self.passwd_file)
        last = list(accounts)[-1]
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                self.doveadm("user", last)
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(USER_POLL_S)

    def deliver(self, recipient: str, sender: str, message: bytes) -> None:
        """Deliver ``message`` into ``recipient``'s INBOX with ``dovecot-lda``.

        Raises:
            RuntimeError: the delivery agent failed (its output included).
        """
        result = subprocess.run(
            [str(LDA), "-c", str(self.config_file), "-d", recipient, "-f", sender],
            input=message,
            capture_output=True,
            timeout=TOOL_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")
            raise RuntimeError(f"dovecot-lda exited {result.returncode}: {output}")

    def doveadm(self, *args: str) -> str:
        """Run ``doveadm`` on this instance; its standard output.

        Raises:
            RuntimeError: doveadm failed (its output included).
        """
        result = subprocess.run(
            [str(DOVEADM), "-c", str(self.config_file), *args],
            capture_output=True,
            timeout=TOOL_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")
            raise RuntimeError(f"doveadm exited {result.returncode}: {output}")
        return result.stdout.decode(errors="replace")


#: serializes :meth:`DovecotServer.add_users`
_PASSWD_LOCK = threading.Lock()


def _missing() -> str | None:
    if not DOVECOT.is_file():
        return f"Dovecot binary {DOVECOT} not found (apt install dovecot-imapd)"
    if os.geteuid() != 0:
        return "the Dovecot fixture runs Dovecot as root (it drops privileges)"
    for user in OS_USERS:
        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"OS user {user!r} missing (installed by dovecot-core)"
    try:
        grp.getgrnam(MAIL_GROUP)
    except KeyError:
        return f"OS group {MAIL_GROUP!r} missing"
    return None


def _oauth2_config(tokeninfo_url: str) -> str:
    """Dovecot's ``oauth2`` passdb settings (``dovecot-oauth2.conf.ext``)."""
    return f"""\
tokeninfo_url = {tokeninfo_url}
username_attribute = email
scope = {OAUTH_SCOPE}
"""


def _oauth2_passdb(base: Path) -> str:
    """The ``oauth2`` passdb block, when ``base`` has its settings file (the
    fixture writes one; the mail benchmark's server signs in by password only)."""
    if not (base / "oauth2.conf").is_file():
        return ""
    return f"""passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {base}/oauth2.conf
}}
"""


def _config(base: Path, imap_port: int, imaps_port: int, cert: TestCert) -> str:
    return f"""\
instance_name = crmflow-test-{imap_port}
base_dir = {base}/run
state_dir = {base}/state
protocols = imap
listen = {LOOPBACK}
ssl = yes
ssl_cert = <{cert.cert_file}
ssl_key = <{cert.key_file}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2 oauthbearer
auth_verbose = yes
auth_failure_delay = 0
verbose_proctitle = yes
log_path = {base}/log/dovecot.log
mail_location = maildir:{base}/mail/%u/Maildir
mail_fsync = never
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  mechanisms = plain login none
  args = scheme=PLAIN username_format=%u {base}/passwd
}}
{_oauth2_passdb(base)}userdb {{
  driver = static
  args = uid=nobody gid={MAIL_GROUP} home={base}/mail/%u
}}
namespace inbox {{
  inbox = yes
  mailbox Sent {{
    special_use = \\Sent
  }}
}}
# no auth penalty: anvil would delay every sign-in from 127.0.0.1 after a
# refused password by up to 15 s (Dovecot "Authentication penalty support")
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = {LOOPBACK}
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = {LOOPBACK}
    port = {imaps_port}
    ssl = yes
  }}
}}
"""


def _master_pid(base: Path) -> int | None:
    try:
        return int((base / "run" / "master.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as stopped: real-servers.md §9)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def _wait_for_pid(base: Path) -> int | None:
    """The daemon's master pid: Dovecot writes it only after it has forked,
    which can be after its ports already accept connections."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        pid = _master_pid(base)
        if pid is not None and _alive(pid):
            return pid
        time.sleep(POLL_S)
    return None


def _start(base: Path, cert: TestCert) -> tuple[int, int, int, Path]:
    """Start Dovecot; returns (imap port, imaps port, master pid, config)."""
    error = ""
    log_file = base / "log" / "dovecot.log"
    for _ in range(START_ATTEMPTS):
        imap_port, imaps_port = free_port(), free_port()
        config = base / "dovecot.conf"
        config.write_text(_config(base, imap_port, imaps_port, cert))
        # Not a pipe: the daemon's children inherit stdout/stderr, and reading
        # a pipe until they close it would wait for Dovecot to stop.
        startup = base / "log" / "startup.log"
        with startup.open("ab") as out:
            result = subprocess.run(
                [str(DOVECOT), "-c", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if result.returncode != 0:
            error = f"dovecot exited {result.returncode}: {startup.read_text()}"
            continue  # most likely a port was taken meanwhile: pick others
        pid = _wait_for_pid(base)
        if pid is None:
            raise RuntimeError(f"Dovecot wrote no master.pid:\n{_read(log_file)}")
        try:
            wait_open([imap_port, imaps_port], "Dovecot", log=lambda: _read(log_file))
        except RuntimeError as exc:
            _stop(pid, [imap_port, imaps_port])
            error = str(exc)
            continue
        return imap_port, imaps_port, pid, config
    raise RuntimeError(f"Dovecot did not start: {error}")


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _stop(pid: int, ports: list[int]) -> None:
    """SIGTERM the master this fixture started; SIGKILL it if it hangs."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + WAIT_S
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    if _alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_closed(ports)


@pytest.fixture(scope="session")
def dovecot(
    tls_cert: TestCert, sandbox_server: SandboxServer
) -> Iterator[DovecotServer]:
    """A running Dovecot with ``USERS`` that checks OAuth tokens with the
    sandbox's Google (session)."""
    reason = _missing()
    if reason is not None:
        missing_server(reason)
    base = Path(tempfile.mkdtemp(prefix="crmflow-dovecot-"))
    try:
        base.chmod(0o755)
        for sub in ("run", "state", "log", "mail"):
            (base / sub).mkdir()
        nobody = pwd.getpwnam("nobody").pw_uid
        os.chown(base / "mail", nobody, grp.getgrnam(MAIL_GROUP).gr_gid)
        (base / "passwd").write_text(
            "".join(f"{user}:{{PLAIN}}{pw}::::::\n" for user, pw in USERS.items()),
            encoding="utf-8",
        )
        tokeninfo_url = sandbox_server.google_url + "tokeninfo?access_token="
        (base / "oauth2.conf").write_text(_oauth2_config(tokeninfo_url))
        imap_port, imaps_port, pid, config = _start(base, tls_cert)
        try:
            yield DovecotServer(
                host=LOOPBACK,
                imap_port=imap_port,
                imaps_port=imaps_port,
                users=USERS,
                log_file=base / "log" / "dovecot.log",
                config_file=config,
                cert=tls_cert,
                passwd_file=base / "passwd",
                tokeninfo_url=tokeninfo_url,
            )
        finally:
            _stop(pid, [imap_port, imaps_port])
    finally:
        shutil.rmtree(base, ignore_errors=True)
