"""Where a mail protocol is served: host, port and how the connection is protected.

Pure values shared by the IMAP/SMTP adapter (``crmflow.providers.imap``), the
stored connection settings and the configuration (Gmail's IMAP and SMTP
servers are settings).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from urllib.parse import urlsplit


class Security(enum.StrEnum):
    """How a mail connection is protected."""

    #: implicit TLS from the first byte (IMAP 993, SMTP 465)
    TLS = "tls"
    #: plain connection upgraded with STARTTLS before sign-in (IMAP 143, SMTP 587)
    STARTTLS = "starttls"
    #: no encryption; allowed only to loopback hosts (local bridges, tests)
    NONE = "none"


@dataclass(frozen=True, slots=True)
class MailServer:
    """Where one mail protocol is served."""

    #: host name or IP address
    host: str
    #: TCP port
    port: int
    security: Security

    def label(self, protocol: str) -> str:
        """``"IMAP server imap.example.com:993"``: how messages name this server."""
        return f"{protocol} server {self.host}:{self.port}"

    @classmethod
    def from_url(cls, url: str) -> MailServer:
        """A server from a URL as configuration writes it.

        ``imaps://host:993`` and ``smtps://host:465``: implicit TLS;
        ``imap://host:143`` and ``smtp://host:587``: STARTTLS;
        ``imap+plain://`` and ``smtp+plain://``: no encryption (loopback only,
        checked where the connection is made). The port is required.

        Raises:
            ValueError: another scheme, no host or no port (naming the URL).
        """
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        base = scheme.removesuffix("+plain").removesuffix("s")
        try:
            port = parts.port
        except ValueError:
            port = None
        if base not in ("imap", "smtp") or not parts.hostname or port is None:
            raise ValueError(
                f"{url!r} is not a mail server URL; write imaps://host:993, "
                "smtps://host:465, imap://host:143 or smtp://host:587 (STARTTLS)"
            )
        if scheme.endswith("+plain"):
            security = Security.NONE
        elif scheme.endswith("s"):
            security = Security.TLS
        else:
            security = Security.STARTTLS
        return cls(parts.hostname, port, security)
