"""Settings from ``CRMFLOW_*`` environment variables and an optional ``.env`` file.

Nothing here does I/O at import time. :func:`load_settings` turns every problem
into one :class:`~crmflow.errors.ConfigError` that names the variables to fix, so
start-up stops with a clear message instead of failing at first use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AnyHttpUrl,
    BeforeValidator,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from crmflow.domain.mail_servers import MailServer
from crmflow.domain.secret import Secret
from crmflow.errors import ConfigError

ENV_PREFIX = "CRMFLOW_"
#: where providers send the browser back after consent (joined to the public URL)
OAUTH_CALLBACK_PATH = "/oauth/callback/{provider}"


def _to_secret(value: Any) -> Secret | None:
    if value is None or isinstance(value, Secret):
        return value
    if isinstance(value, str):
        return Secret(value) if value.strip() else None
    raise ValueError("must be a string")


SecretSetting = Annotated[
    Secret,
    BeforeValidator(_to_secret),
    PlainSerializer(lambda s: str(s), return_type=str),
    WithJsonSchema({"type": "string", "writeOnly": True}),
]


class Settings(BaseSettings):
    """Effective configuration. Every field is ``CRMFLOW_<FIELD NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        extra="ignore",
        arbitrary_types_allowed=True,
        validate_default=True,
    )

    #: where the SQLite database, blobs and demo state live
    data_dir: Path = Path(".data")
    #: the application's database (SQLite file by default; PostgreSQL in production,
    #: connecting as the non-owner application role)
    database_url: str | None = None
    #: the database owner's URL, for migrations and administration; defaults to
    #: ``database_url``
    admin_database_url: str | None = None
    #: AES-256-GCM key ring: ``id:base64key,id:base64key``; the last key encrypts
    #: new secrets, all keys decrypt (``crmflow keys generate`` makes one)
    encryption_keys: SecretSetting | None = None
    #: signs session cookies; 32+ random characters
    session_secret: SecretSetting | None = None
    #: the URL users and providers reach this service at (OAuth redirects, webhooks)
    public_base_url: AnyHttpUrl = AnyHttpUrl("http://127.0.0.1:8000")
    #: where providers deliver push notifications (Google Calendar channels):
    #: ``<this>/webhooks/google/calendar``. Unset: ``public_base_url`` when it
    #: is https (Google only notifies https addresses); else push is off and the
    #: schedule alone keeps calendars in sync
    webhook_base_url: AnyHttpUrl | None = None
    #: the lifetime asked for a push channel, in seconds (Google's default and
    #: usual maximum is a week); a channel is replaced a day before it ends
    push_channel_ttl_s: int = Field(default=604_800, ge=3_600, le=2_592_000)
    #: address ``crmflow serve`` listens on
    host: str = "127.0.0.1"
    #: port ``crmflow serve`` listens on
    port: int = Field(default=8000, ge=1, le=65535)
    #: serve the Google/Microsoft sandbox inside the app and point providers at it
    sandbox_enabled: bool = False
    #: Google OAuth client
    google_client_id: str | None = None
    google_client_secret: SecretSetting | None = None
    #: Google endpoints (production hosts; the sandbox replaces them in the demo)
    google_accounts_url: AnyHttpUrl = AnyHttpUrl("https://accounts.google.com")
    google_oauth2_url: AnyHttpUrl = AnyHttpUrl("https://oauth2.googleapis.com")
    google_api_url: AnyHttpUrl = AnyHttpUrl("https://www.googleapis.com")
    #: Gmail's IMAP and SMTP servers, for Gmail connections switched to IMAP +
    #: SMTP with OAuth (XOAUTH2); ``imaps://``/``smtps://``: implicit TLS,
    #: ``imap://``/``smtp://``: STARTTLS. The account's access token is sent
    #: to these hosts, so only the deployment chooses them, never a user.
    google_imap_url: str = "imaps://imap.gmail.com:993"
    google_smtp_url: str = "smtps://smtp.gmail.com:465"
    #: Microsoft identity platform client
    microsoft_client_id: str | None = None
    microsoft_client_secret: SecretSetting | None = None
    #: ``common``, ``organizations``, ``consumers`` or a tenant id
    microsoft_tenant: str = "common"
    microsoft_login_url: AnyHttpUrl = AnyHttpUrl("https://login.microsoftonline.com")
    microsoft_graph_url: AnyHttpUrl = AnyHttpUrl("https://graph.microsoft.com")
    #: further OAuth redirect URIs a connect request may name besides the one
    #: derived from ``public_base_url`` (development front ends): comma-separated,
    #: ``{provider}`` stands for ``google`` / ``microsoft``; each must be https, or
    #: http on a loopback host (localhost, 127.0.0.1, [::1])
    oauth_extra_redirect_uris: str = ""
    #: how long a started OAuth connect waits for its callback, in seconds
    oauth_flow_ttl_s: int = Field(default=600, ge=60, le=3600)
    #: refresh an access token this many seconds before it expires
    token_refresh_margin_s: int = Field(default=120, ge=0, le=1800)
    #: token refresh attempts on network errors and 5xx before giving up
    token_refresh_attempts: int = Field(default=3, ge=1, le=10)
    #: first pause between refresh attempts, in seconds (doubles, with jitter)
    token_refresh_backoff_s: float = Field(default=0.5, ge=0, le=60)
    #: provider API calls: tries in all for a rate limit or a passing fault
    #: (Retry-After honoured, else exponential back-off with jitter)
    http_max_attempts: int = Field(default=4, ge=1, le=10)
    #: the longest single pause between tries, in seconds; a longer Retry-After
    #: ends the call and the scheduled sync backs off instead
    http_max_delay_s: float = Field(default=30.0, ge=0, le=600)
    #: a PEM file of extra certificate authorities trusted *in addition to* the
    #: system's, for self-hosted IMAP/SMTP/CalDAV servers with their own CA (e.g.
    #: a company CA); certificate checks are never switched off
    extra_ca_file: Path | None = None
    #: where attachment content is stored (default: ``<data_dir>/blobs``)
    blob_dir: Path | None = None
    #: the first import of a mailbox covers this many days of mail
    mail_import_days: int = Field(default=90, ge=1, le=3650)
    #: every calendar and mailbox is synced this often, in seconds (a polling
    #: fallback even where push notifications exist)
    sync_interval_s: int = Field(default=300, ge=10, le=86_400)
    #: spread of the interval, as a fraction (0.1: plus or minus 10 %)
    sync_jitter: float = Field(default=0.1, ge=0, lt=1)
    #: scheduled syncs in this process: ``auto`` runs them inside ``crmflow
    #: serve`` / ``demo`` on SQLite (the embedded default has no worker);
    #: ``on`` / ``off`` force it either way
    background_sync: Literal["auto", "on", "off"] = "auto"
    #: scheduled syncs run at the same time by one process, at most
    sync_concurrency: int = Field(default=2, ge=1, le=64)
    #: IMAP mailboxes one process keeps an IDLE connection open to, at most
    #: (0: none; the rest are polled)
    imap_idle_max: int = Field(default=20, ge=0, le=1000)
    #: log level of crmflow's own loggers
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("database_url", "admin_database_url")
    @classmethod
    def _check_db_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme = value.split(":", 1)[0].split("+", 1)[0]
        if scheme not in ("sqlite", "postgresql", "postgres"):
            raise ValueError(
                "must start with sqlite:/// or postgresql:// "
                "(e.g. postgresql://crmflow_app:pw@db.example/crmflow)"
            )
        return value

    @field_validator("encryption_keys")
    @classmethod
    def _check_keys(cls, value: Secret | None) -> Secret | None:
        if value is not None:
            # Imported here: the store layer depends on config, not the reverse.
            from crmflow.errors import CryptoError
            from crmflow.store.crypto import parse_key_ring

            try:
                parse_key_ring(value)
            except CryptoError as exc:
                raise ValueError(
                    exc.message.removeprefix("CRMFLOW_ENCRYPTION_KEYS: ")
                ) from None
        return value

    @field_validator("extra_ca_file", mode="before")
    @classmethod
    def _blank_ca_file(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("extra_ca_file")
    @classmethod
    def _check_extra_ca_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(
                f"{value} is not a readable file (a PEM file of CA certificates)"
            )
        return value

    @field_validator("google_imap_url", "google_smtp_url")
    @classmethod
    def _check_mail_server_url(cls, value: str) -> str:
        MailServer.from_url(value)
        return value

    @field_validator("session_secret")
    @classmethod
    def _check_session_secret(cls, value: Secret | None) -> Secret | None:
        if value is not None and len(value.reveal()) < 32:
            raise ValueError("must be at least 32 characters")
        return value

    @field_validator("oauth_extra_redirect_uris")
    @classmethod
    def _check_redirect_uris(cls, value: str) -> str:
        for uri in _split_uris(value):
            problem = redirect_uri_problem(uri.replace("{provider}", "google"))
            if problem:
                raise ValueError(f"{uri}: {problem}")
        return value

    @property
    def effective_database_url(self) -> str:
        """The application's database URL (the SQLite default when unset)."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'crmflow.db').as_posix()}"

    @property
    def effective_blob_dir(self) -> Path:
        """Where attachment content lives."""
        return self.blob_dir or self.data_dir / "blobs"

    def oauth_redirect_uri(self, provider: str) -> str:
        """The redirect URI registered with ``provider`` for this deployment."""
        base = str(self.public_base_url).rstrip("/")
        return base + OAUTH_CALLBACK_PATH.format(provider=provider)

    def oauth_redirect_uris(self, provider: str) -> tuple[str, ...]:
        """Every redirect URI a connect to ``provider`` may use: the deployment's
        own (:meth:`oauth_redirect_uri`, first) and ``oauth_extra_redirect_uris``."""
        extra = (
            u.replace("{provider}", provider)
            for u in _split_uris(self.oauth_extra_redirect_uris)
        )
        return tuple(dict.fromkeys((self.oauth_redirect_uri(provider), *extra)))

    @property
    def webhook_base(self) -> str | None:
        """Where push notifications are delivered, or None when push is off."""
        if self.webhook_base_url is not None:
            return str(self.webhook_base_url).rstrip("/")
        if self.public_base_url.scheme == "https":
            return str(self.public_base_url).rstrip("/")
        return None

    @property
    def in_process_sync(self) -> bool:
        """Whether ``crmflow serve`` runs scheduled syncs itself."""
        if self.background_sync != "auto":
            return self.background_sync == "on"
        return self.effective_database_url.startswith("sqlite")

    @property
    def effective_admin_database_url(self) -> str:
        """The URL migrations and administration use."""
        return self.admin_database_url or self.effective_database_url

    def require(self, *names: str) -> None:
        """Stop with a :class:`ConfigError` when any named setting is unset.

        Raises:
            ConfigError: naming every missing variable and how to set it.
        """
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            hints = {
                "encryption_keys": "create one with `crmflow keys generate`",
                "session_secret": "any random string of 32+ characters",
            }
            lines = [
                f"{ENV_PREFIX}{n.upper()} is not set ({hints.get(n, 'required')})"
                for n in missing
            ]
            raise ConfigError("Missing settings:\n  " + "\n  ".join(lines))

    def masked(self) -> dict[str, str]:
        """Every setting as ``CRMFLOW_NAME -> value`` with secrets masked."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, Secret):
                shown = "********** (set)"
            elif value is None:
                shown = "(unset)"
            elif name.endswith("database_url"):
                shown = mask_url_password(str(value))
            else:
                shown = str(value)
            out[f"{ENV_PREFIX}{name.upper()}"] = shown
        return out


def _split_uris(value: str) -> list[str]:
    return [u.strip() for u in value.split(",") if u.strip()]


#: hosts where a plain-http OAuth redirect URI is acceptable (development)
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


def redirect_uri_problem(uri: str) -> str | None:
    """Why ``uri`` cannot be an OAuth redirect URI, or None when it can.

    Providers accept https, and plain http only on loopback hosts (Google's and
    Microsoft's rule for development); fragments are never allowed (RFC 6749
    section 3.1.2).
    """
    scheme, sep, rest = uri.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    if host.startswith("["):
        host = host.split("]", 1)[0] + "]"
    else:
        host = host.split(":", 1)[0]
    if not sep or not host:
        return "must be an absolute URL such as https://crm.example.com/oauth/callback/google"
    if "#" in uri:
        return "must not contain a fragment (#)"
    if scheme == "https":
        return None
    if scheme == "http" and host.lower() in LOOPBACK_HOSTS:
        return None
    return "must use https (plain http only on localhost, 127.0.0.1 or [::1])"


def mask_url_password(url: str) -> str:
    """Replace the password of ``scheme://user:password@host`` with asterisks."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user, colon, _pw = creds.partition(":")
    return f"{scheme}://{user}{':****' if colon else ''}@{host}"


def load_settings(**overrides: Any) -> Settings:
    """Read the settings, or stop with a message naming each bad variable.

    Raises:
        ConfigError: one line per missing or malformed ``CRMFLOW_*`` variable.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"]) or "?"
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{ENV_PREFIX}{name.upper()}: {msg}")
        raise ConfigError("Invalid configuration:\n  " + "\n  ".join(lines)) from None
