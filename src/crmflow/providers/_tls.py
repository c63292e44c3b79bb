"""Transport plumbing shared by the credential adapters (IMAP, SMTP, CalDAV).

* :func:`client_context` builds the one kind of TLS client context they use:
  the system's trust store plus, optionally, the deployment's extra CA file
  (``CRMFLOW_EXTRA_CA_FILE``). Certificate and host name checks are always on;
  there is deliberately no switch to turn them off.
* :func:`require_safe_transport` allows unencrypted connections only to this
  machine (see its docstring for why).
* :func:`cause` and :func:`tls_failure` / :func:`unreachable` turn socket and
  ``ssl`` errors into the ``ConnectionCheckFailed`` tree of ``providers/base.py``
  with messages that say what happened and what to do. They never include a
  password, a header or a request body: only host, port and the library's
  error class or reason.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
from pathlib import Path
from typing import TypeVar

from crmflow.errors import ConfigError, ValidationFailed
from crmflow.providers.base import HostUnreachable, TlsFailure

E = TypeVar("E", bound=BaseException)

#: what users are told about self-hosted servers with their own CA
_CA_HINT = (
    "If the server uses a certificate from your organization's own certificate "
    "authority, your administrator can trust it with CRMFLOW_EXTRA_CA_FILE."
)


def client_context(
    extra_ca_file: Path | None, *, for_http: bool = False
) -> ssl.SSLContext:
    """A verifying TLS client context (TLS 1.2+, host names checked).

    Made once per CA file and use, and kept: building one reads the whole
    system CA store (about 30 ms of CPU, which every CalDAV run and mailbox
    connection would pay again). A CA file replaced on disk (another inode,
    size or change time) is read again; the system store only when the
    process restarts. Callers share the result and must not change it;
    ``for_http`` gives HTTP clients their own, because httpcore sets its ALPN
    protocols (``http/1.1``) on every connection, which a mail server must
    not be offered.

    Args:
        extra_ca_file: PEM certificates trusted in addition to the system's.
        for_http: the context is for an httpx client.

    Raises:
        ConfigError: the extra CA file cannot be read or holds no certificate.
    """
    if extra_ca_file is None:
        return _context(None, None, for_http)
    try:
        stat = extra_ca_file.stat()
    except OSError:
        version = None  # unreadable: _context reports it
    else:
        version = (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    return _context(extra_ca_file, version, for_http)


@functools.lru_cache(maxsize=16)
def _context(
    extra_ca_file: Path | None,
    version: tuple[int, int, int, int] | None,
    for_http: bool,
) -> ssl.SSLContext:
    """:func:`client_context`, cached by the CA file, its ``version`` and the
    use (errors are raised again on every call, never cached)."""
    ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if extra_ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=str(extra_ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"CRMFLOW_EXTRA_CA_FILE: {extra_ca_file} cannot be loaded "
                f"({type(exc).__name__}); point it at a PEM file of CA certificates."
            ) from None
    return ctx


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (``localhost``, 127.0.0.0/8, ``::1``).

    Decided from the name alone, without a DNS lookup (RFC 6761 reserves
    ``localhost`` and ``*.localhost`` for loopback).
    """
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def require_safe_transport(host: str, encrypted: bool, what: str) -> None:
    """Refuse to send a password unencrypted anywhere but to this machine.

    Unencrypted IMAP/SMTP/HTTP would put the password on the network in the
    clear. On loopback it never leaves the machine, which is what local bridges
    listen on (Proton Mail Bridge, DavMail: 127.0.0.1 with plain or STARTTLS
    ports) and what the test servers use; everywhere else TLS is required.

    Raises:
        ValidationFailed: ``encrypted`` is false and ``host`` is not loopback.
    """
    if not encrypted and not is_loopback(host):
        raise ValidationFailed(
            f"{what}: an unencrypted connection to {host} would send your password "
            "in the clear. Unencrypted connections are allowed only to this machine "
            "(localhost, 127.0.0.1, ::1); choose TLS or STARTTLS (or https)."
        )


def cause(exc: BaseException, kind: type[E]) -> E | None:
    """The first exception of ``kind`` in ``exc``'s cause/context chain (or itself)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def network_cause(exc: BaseException) -> OSError | None:
    """The most telling socket error under ``exc``.

    Libraries wrap the real cause (anyio: ``OSError('All connection attempts
    failed')`` around the ``ConnectionRefusedError``), so a DNS failure, a
    refusal or a timeout anywhere in the chain wins over a generic ``OSError``.
    """
    for kind in (socket.gaierror, ConnectionRefusedError, TimeoutError):
        found = cause(exc, kind)
        if found is not None:
            return found
    return cause(exc, OSError)


def tls_failure(what: str, exc: ssl.SSLError, hint: str) -> TlsFailure:
    """The user-facing error for a failed TLS handshake.

    Args:
        what: names the server, e.g. ``"IMAP server imap.example.com:993"``.
        exc: the ``ssl`` error.
        hint: what to check for this protocol when the handshake itself failed
            (typically: the port does not speak implicit TLS).
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or exc.reason or "certificate rejected"
        return TlsFailure(
            f"{what}: the server's TLS certificate is not trusted ({reason}). "
            f"Check the host name; it must match the certificate. {_CA_HINT}"
        )
    reason = exc.reason or type(exc).__name__
    return TlsFailure(f"{what}: the secure (TLS) connection failed ({reason}). {hint}")


def unreachable(what: str, exc: OSError, timeout_s: float) -> HostUnreachable:
    """The user-facing error for a connection that could not be opened."""
    if isinstance(exc, socket.gaierror):
        return HostUnreachable(
            f"{what}: the host name could not be resolved; check it for typos."
        )
    if isinstance(exc, ConnectionRefusedError):
        return HostUnreachable(
            f"{what}: the connection was refused (nothing listens on that port); "
            "check the host and port."
        )
    if isinstance(exc, TimeoutError):
        return HostUnreachable(
            f"{what}: no answer within {timeout_s:g} s; check the host and port, "
            "and that a firewall allows the connection."
        )
    return HostUnreachable(
        f"{what}: the server could not be reached ({type(exc).__name__}); check the "
        "host and port, and try again later."
    )


def server_text(text: str | bytes, limit: int = 200) -> str:
    """A server's own words (an IMAP ``NO`` or SMTP reply), safe to show.

    Untrusted: only printable characters, cut at ``limit``.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    clean = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"
