"""SQLAlchemy 2.0 models. ORM rows never leave ``store/``.

Every tenant row carries ``organization_id``; rows a person owns also carry
``user_id``. Each table declares its tenancy class in ``info["tenancy"]``, which
drives both the repository predicates and the PostgreSQL row level security
policies (``store/rls.py``):

* ``identity`` - organizations, users, memberships (special policies);
* ``personal`` - rows of one user in one organization;
* ``shared`` - CRM rows every member of the organization sees;
* ``org_secret`` - organization settings only the service reads;
* ``system`` - installation-wide rows holding no tenant data (key canaries).

The integration tables keep the names and columns of the design notes this
product grew from (``user_integrations``, ``calendar_event_mappings``, ...).
Secrets are stored as vault ciphertext (``store/crypto.py``), never plaintext.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

Tenancy = Literal["identity", "personal", "shared", "org_secret", "system"]

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    """The current instant, aware, in UTC."""
    return dt.datetime.now(dt.UTC)


def new_ical_uid() -> str:
    """A fresh iCalendar UID for an appointment made in the CRM."""
    return f"{uuid.uuid4()}@crmflow"


class UTCDateTime(TypeDecorator[dt.datetime]):
    """An aware datetime stored in UTC on every database.

    SQLite has no time zone type and hands back naive values; this type refuses
    naive input and always returns aware UTC datetimes.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC)

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    """Declarative base with constraint naming shared by both databases."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        dt.datetime: UTCDateTime(),
        uuid.UUID: Uuid(),
        dict[str, Any]: JSON(),
        list[Any]: JSON(),
    }


def _id() -> Mapped[uuid.UUID]:
    return mapped_column(primary_key=True, default=uuid.uuid4)


def _org_fk() -> Mapped[uuid.UUID]:
    return mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)


def _user_fk() -> Mapped[uuid.UUID]:
    return mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)


def _created() -> Mapped[dt.datetime]:
    return mapped_column(default=utcnow)


def _updated() -> Mapped[dt.datetime]:
    return mapped_column(default=utcnow, onupdate=utcnow)


# --------------------------------------------------------------------- identity


class Organization(Base):
    __tablename__ = "organizations"
    __table_args__ = {"info": {"tenancy": "identity"}}  # noqa: RUF012

    id: Mapped[uuid.UUID] = _id()
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[dt.datetime] = _created()


class User(Base):
    __tablename__ = "users"
    __table_args__ = {"info": {"tenancy": "identity"}}  # noqa: RUF012

    id: Mapped[uuid.UUID] = _id()
    #: stored lower-case; unique across the installation
    email: Mapped[str] = mapped_column(String(320), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    #: argon2id hash (``store/passwords.py``)
    password_hash: Mapped[str] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    #: bumped by a password change or "sign out everywhere"; session cookies
    #: carrying an older value are refused
    session_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()


class UserOrganization(Base):
    __tablename__ = "user_organizations"
    __table_args__ = (
        CheckConstraint("role IN ('member', 'admin', 'super_admin')", name="role"),
        {"info": {"tenancy": "identity"}},
    )

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(20), default="member")
    created_at: Mapped[dt.datetime] = _created()


class ApiToken(Base):
    """A personal API token (Bearer) of one user in one organization."""

    __tablename__ = "api_tokens"
    __table_args__ = {"info": {"tenancy": "personal"}}  # noqa: RUF012

    id: Mapped[uuid.UUID] = _id()
    organization_id: Mapped[uuid.UUID] = _org_fk()
    user_id: Mapped[uuid.UUID] = _user_fk()
    name: Mapped[str] = mapped_column(String(100))
    #: SHA-256 of the token; the token itself is shown once and never stored
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: first characters of the token, to recognise it in lists
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = _created()
    last_used_at: Mapped[dt.datetime | None]
    expires_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]


# ---------------------------------------------------------------------- CRM rows


class Contact(Base):
    __tablename__ = "contacts"
    __table_args__ = {"info": {"tenancy": "shared"}}  # noqa: RUF012

    id: Mapped[uuid.UUID] = _id()
    organization_id: Mapped[uuid.UUID] = _org_fk()
    #: who created it (contacts are shared with the whole organization)
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    #: normalized (lower-case) addresses, first one primary
    email_addresses: Mapped[list[Any]] = mapped_column(default=list)
    company: Mapped[str | None] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(50))
    notes: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class Appointment(Base):
    __tablename__ = "appointments"
    __table_args__ = (
        CheckConstraint("end_at > start_at", name="end_after_start"),
        CheckConstraint(
            "status IN ('confirmed', 'tentative', 'cancelled')", name="status"
        ),
        Index(None, "organization_id", "start_at"),
        # one appointment per meeting in an organization (calendar sync matches
        # events on their iCalendar UID)
        UniqueConstraint("organization_id", "ical_uid"),
        # shared reads; changes by the owner or an admin only (store/rls.py)
        {"info": {"tenancy": "shared", "owner_writes": True}},
    )

    id: Mapped[uuid.UUID] = _id()
    organization_id: Mapped[uuid.UUID] = _org_fk()
    #: the owner; only they (or an admin) change the appointment
    user_id: Mapped[uuid.UUID] = _user_fk()
    title: Mapped[str] = mapped_column(String(500))
    description: Mapped[str | None] = mapped_column(Text)
    location: Mapped[str | None] = mapped_column(String(500))
    #: UTC instants; for all-day appointments midnight of the first day and of the
    #: exclusive end day in ``timezone``
    start_at: Mapped[dt.datetime]
    end_at: Mapped[dt.datetime]
    #: IANA zone the appointment was entered in
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    all_day: Mapped[bool] = mapped_column(Boolean, default=False)
    #: ``[{"email", "name", "response_status"}]``
    attendees: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(20), default="confirmed")
    #: RFC 5545 RRULE value without the ``RRULE:`` prefix
    recurrence_rule: Mapped[str | None] = mapped_column(String(500))
    #: every recurrence line (``RRULE:..``, ``EXDATE;TZID=..:..``); the RRULE
    #: among them is ``recurrence_rule``
    recurrence: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")
    #: overridden or cancelled occurrences (``store/calendar_json.py`` format)
    recurrence_exceptions: Mapped[list[Any]] = mapped_column(
        default=list, server_default="[]"
    )
    #: when the last occurrence ends: ``end_at`` for an appointment that does
    #: not repeat; NULL for a series without end (or not worked out yet), so
    #: that a range query can pass over series that have ended
    #: (``domain.recurrence.series_end``)
    series_end_at: Mapped[dt.datetime | None]
    #: the iCalendar UID: the event's identity in every synced calendar
    ical_uid: Mapped[str] = mapped_column(String(1024), default=new_ical_uid)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()
    #: incremented by every write (optimistic concurrency, sync change detection)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


# ------------------------------------------------------------ integration tables


class UserIntegration(Base):
    """One connected account of a user (design notes: ``user_integrations``)."""

    __tablename__ = "user_integrations"
    __table_args__ = (
        UniqueConstraint("user_id", "provider", "kind"),
        CheckConstraint(
            "provider IN ('google', 'microsoft', 'apple', 'imap', 'caldav')",
            name="provider",
        ),
        CheckConstraint("kind IN ('gmail', 'calendar', 'mail')", name="kind"),
        CheckConstraint(
            "status IN ('connected', 'needs_reauth', 'error')", name="status"
        ),
        {"info": {"tenancy": "personal"}},
    )

    id: Mapped[uuid.UUID] = _id()
    organization_id: Mapped[uuid.UUID] = _org_fk()
    user_id: Mapped[uuid.UUID] = _user_fk()
    provider: Mapped[str] = mapped_column(String(20))
    kind: Mapped[str] = mapped_column(String(20))
    email: Mapped[str | None] = mapped_column(String(320))
    account_id: Mapped[str | None] = mapped_column(String(255))
    #: vault ciphertext
    access_token: Mapped[str | None] = mapped_column(Text)
    #: vault ciphertext
    refresh_token: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[dt.datetime | None]
    scopes: Mapped[list[Any]] = mapped_column(default=list)
    connected_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()
    #: ``connected``, ``needs_reauth`` (the grant is gone: the user must reconnect)
    #: or ``error`` (last use failed for another reason; retried)
    status: Mapped[str] = mapped_column(
        String(20), default="connected", server_default="connected"
    )
    #: what went wrong last, in words for the user (never a token)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_refreshed_at: Mapped[dt.datetime | None]
    #: non-secret connection parameters (IMAP/SMTP hosts, CalDAV URLs, user name)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default="{}")
    #: vault ciphertext: the password of a credential connection (IMAP, CalDAV)
    password: Mapped[str | None] = mapped_column(Text)


class IntegrationEvent(Base):
    """The audit trail of a user's integrations, shown to the user."""

    __tablename__ = "integration_events"
    __table_args__ = (
        CheckConstraint(
            "event IN ('connected', 'refreshed', 'refresh_failed', 'needs_reauth', "
            "'reconnected', 'disconnected')",
            name="event",
        ),
        Index(None, "user_id", "created_at"),
        {"info": {"tenancy": "personal"}},
    )

    id: Mapped[uuid.UUID] = _id()
    organization_id: Mapped[uuid.UUID] = _org_fk()
    user_id: Mapped[uuid.UUID] = _user_fk()
    #: kept after a disconnect (the row it named is gone then)
    integration_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("user_integrations.id", ondelete="SET NULL"), index=True
    )
    provider: Mapped[str] = mapped_column(String(20))
    kind: Mapped[str] = mapped_column(String(20))
    event: Mapped[str] = mapped_column(String(20))
    #: what happened, in words for the user (never a token)
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created()


class OAuthFlow(Base):
    """One started OAuth authorization: ``state`` and the PKCE verifier.

    Kept server-side so the callback can check that the state belongs to the
    signed-in user, is used once, and has not expired.
    """

    __tablename__ = "oauth_flows"
    __table_args__ = {"info": {"tenancy": "personal"}}  # noqa: RUF012

    id: Mapped[uuid.UUID] = _id()
    organization_id: Mapped[uuid.UUID] = _org_fk()
    user_id: Mapped[uuid.UUID] = _user_fk()
    provider: Mapped[str] = mapped_column(String(20))
    kind: Mapped[str] = mapped_column(String(20))
    #: random, 256 bits, URL-safe
    state: Mapped[str] = mapped_column(String(128), unique=True)
    #: vault ciphertext of the PKCE code_verifier (RFC 7636)
    code_verifier: Mapped[str] = mapped_column(Text)
    redirect_uri: Mapped[str] = mapped_column(String(2000))
    scopes: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[dt.datetime] = _created()
    expires_at: Mapped[dt.datetime]
    consumed_at: Mapped[dt.datetime | None]


class OAuthSecret(Base):
    """OAuth client credentials of an organization; read by the service only."""

    __tablename__ = "oauth_secrets"
    __table_args__ = (
        UniqueConstraint("organization_id", "provider"),
        {"info": {"tenancy": "org_secret"}},
    )

    id: Mapped[uuid.UUID] = _id()
    organization_id: Mapped[uuid.UUID] = _org_fk()
    provider: Mapped[str] = mapped_column(String(20))
    client_id: Mapped[str] = mapped_column(String(500))
    #: vault ciphertext
    client_secret: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()


class EmailAccount(Base):
    __tablename__ = "email_accounts"
    __table_args__ = (
        UniqueConstraint("user_id", "integration_id"),
        {"info": {"tenancy": "personal"}},
    )

    id: Mapped[uuid.UUID] = _id()
    organization_id: Mapped[uuid.UUID] = _org_fk()
    user_id: Mapped[uuid.UUID] = _user_fk()
    integration_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("user_integrations.id", ondelete="SET NULL"), index=True
    )
    provider: Mapped[str] = mapped_column(String(20))
    email_address: Mapped[str] = mapped_column(String(320))
    display_name: Mapped[str | None] = mapped_column(String(200))
    #: provider cursor (Gmail historyId, Graph deltaLink, IMAP UIDVALIDITY/UID)
    sync_state: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(20), default="active")
    last_synced_at: Mapped[dt.datetime | None]
    #: the last sync's failure in words (None after a successful run)
    last_error: Mapped[str | None] = mapped_column(Text)
    #: one sync at a time: a run holds the account until then
    sync_lease_until: Mapped[dt.datetime | None]
    #: the first import covers mail received since then
    import_since: Mapped[dt.datetime | None]
    #: when the scheduler syncs this mailbox next (None: as soon as it can)
    next_sync_at: Mapped[dt.datetime | None] = mapped_column(index=True)
    #: failed scheduled syncs in a row (sets the back-off)
    sync_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: due because a push notification came in (the run is logged as a webhook run)
    sync_pushed: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()


class EmailMessage(Base):
    __tablename__ = "email_messages"
    __table_args__ = (
        UniqueConstraint("email_account_id", "provider_message_id"),
        Index(None, "email_account_id", "dedupe_key"),
        Index(None, "user_id", "received_at"),
        {"info": {"tenancy": "personal"}},
    )

    id: Mapped[uuid.UUID] = _id()
    organization_id: Mapped[uuid.UUID] = _org_fk()
    user_id: Mapped[uuid.UUID] = _user_fk()
    email_account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("email_accounts.id", ondelete="CASCADE"), index=True
    )
    provider_message_id: Mapped[str] = mapped_column(String(500))
    #: RFC 5322 Message-ID
    message_id_header: Mapped[str | None] = mapped_column(String(998), index=True)
    #: the CRM's thread (see ``crmflow.mail.threading``)
    thread_id: Mapped[str | None] = mapped_column(String(500), index=True)
    #: the provider's thread: Gmail threadId, Graph conversationId
    provider_thread_id: Mapped[str | None] = mapped_column(String(500))
    in_reply_to: Mapped[str | None] = mapped_column(String(998))
    references: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")
    #: Message-ID, or ``h:<sha256>`` of the content for mail without one
    dedupe_key: Mapped[str | None] = mapped_column(String(998))
    #: "Name <address>" of sender and recipients, for search
    addresses_text: Mapped[str | None] = mapped_column(Text)
    folder: Mapped[str] = mapped_column(
        String(10), default="inbox", server_default="inbox"
    )
    has_attachments: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    direction: Mapped[str] = mapped_column(String(10), default="inbound")
    subject: Mapped[str | None] = mapped_column(Text)
    from_address: Mapped[str | None] = mapped_column(String(320))
    from_name: Mapped[str | None] = mapped_column(String(200))
    to_addresses: Mapped[list[Any]] = mapped_column(default=list)
    cc_addresses: Mapped[list[Any]] = mapped_column(default=list)
    bcc_addresses: Mapped[list[Any]] = mapped_column(default=list)
    snippet: Mapped[str | None] = mapped_column(Text)
    body_text: Mapped[str | None] = mapped_column(Text)
    body_html: Mapped[str | None] = mapped_column(Text)
    is_read: Mapped[bool] = mapped_column(Boolean, default=False)
    labels: Mapped[list[Any]] = mapped_column(default=list)
    sent_at: Mapped[dt.datetime | None]
    received_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = _created()


class EmailAttachment(Base):
    __tablename__ = "email_attachments"
    __table_args__ = {"info": {"tenancy": "personal"}}  # noqa: RUF012

    id: Mapped[uuid.UUID] = _id()
    organization_id: Mapped[uuid.UUID] = _org_fk()
    user_id: Mapped[uuid.UUID] = _user_fk()
    email_message_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("email_messages.id", ondelete="CASCADE"), index=True
    )
    filename: Mapped[str | None] = mapped_column(String(500))
    content_type: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    content_id: Mapped[str | None] = mapped_column(String(500))
    provider_attachment_id: Mapped[str | None] = mapped_column(Text)
    #: key of the content in the blob store (None until downloaded)
    blob_key: Mapped[str | None] = mapped_column(String(500))
    sha256: Mapped[str | None] = mapped_column(String(64))
    inline: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[dt.datetime] = _created()


class EmailMessageAddress(Base):
    """One correspondent of a message, by link key: how mail finds contacts."""

    __tablename__ = "email_message_addresses"
    __table_args__ = (
        CheckConstraint("role IN ('from', 'to', 'cc', 'bcc')", name="role"),
        Index(None, "organization_id", "link_key"),
        {"info": {"tenancy": "personal"}},
    )

    id: Mapped[uuid.UUID] = _id()
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    user_id: Mapped[uuid.UUID] = _user_fk()
    email_message_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("email_messages.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(4))
    #: ``crmflow.mail.addresses.link_key`` of the address
    link_key: Mapped[str] = mapped_column(String(320))


#: objects created outside the models: PostgreSQL's generated search column
#: and its index, SQLite's FTS5 table and its shadow tables (migrations), and
#: the job queue's tables (``crmflow db upgrade``: procrastinate's own schema)
_UNMODELLED = (
    "email_search",
    "search_vector",
    "ix_email_messages_search_vector",
    "procrastinate_",
)


def include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """Alembic's filter: leave unmodelled objects out of schema comparison."""
    return not (name or "").startswith(_UNMODELLED)


class CalendarAccount(Base):
    __tablename__ = "calendar_accounts"
    __table_args__ = (
        CheckConstraint(
            "sync_direction IN ('two_way', 'import_only', 'export_only')",
            name="sync_direction",
        ),
        CheckConstraint(
            "conflict_strategy IN ('crm_wins', 'calendar_wins', 'latest_wins', "
            "'manual')",
            name="conflict_strategy",
        ),
        CheckConstraint("export_scope IN ('own', 'none')", name="export_scope"),
        CheckConstraint("delete_mode IN ('cancel', 'delete')", name="delete_mode"),
        UniqueConstraint("user_id", "integration_id", "external_calendar_id"),
        {"info": {"tenancy": "personal"}},
    )

    id: Mapped[uuid.UUID] = _id()
    organization_id: Mapped[uuid.UUID] = _org_fk()
    user_id: Mapped[uuid.UUID] = _user_fk()
    integration_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("user_integrations.id", ondelete="SET NULL"), index=True
    )
    provider: Mapped[str] = mapped_column(String(20))
    external_calendar_id: Mapped[str] = mapped_column(String(1024))
    name: Mapped[str] = mapped_column(String(500))
    sync_direction: Mapped[str] = mapped_column(String(20), default="two_way")
    conflict_strategy: Mapped[str] = mapped_column(String(20), default="manual")
    #: provider cursor (Google syncToken, Graph deltaLink, CalDAV sync-token)
    sync_cursor: Mapped[str | None] = mapped_column(Text)
    #: the listing ``sync_cursor`` is relative to: ``{remote id: version}``;
    #: loaded only when asked for (every event of the calendar: only the sync
    #: status reads it, with ``select``)
    sync_cursor_listing: Mapped[dict[str, Any]] = mapped_column(
        default=dict, server_default="{}", deferred=True
    )
    #: which CRM appointments go to this calendar: ``own`` (the user's own,
    #: not synced with another of their calendars) or ``none`` (only what came
    #: from it)
    export_scope: Mapped[str] = mapped_column(
        String(10), default="own", server_default="own"
    )
    #: what an event deleted in the calendar does to its appointment
    delete_mode: Mapped[str] = mapped_column(
        String(10), default="cancel", server_default="cancel"
    )
    is_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    last_synced_at: Mapped[dt.datetime | None]
    #: ``success``, ``partial`` or ``failed``: how the last run ended
    last_sync_status: Mapped[str | None] = mapped_column(String(20))
    #: the last run's failure in words for the user
    last_error: Mapped[str | None] = mapped_column(Text)
    #: one sync at a time: a run holds this lease until it ends or expires
    sync_lease_until: Mapped[dt.datetime | None]
    #: when the scheduler syncs this calendar next (None: as soon as it can)
    next_sync_at: Mapped[dt.datetime | None] = mapped_column(index=True)
    #: failed scheduled runs in a row (sets the back-off)
    sync_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: due because a push notification came in (the run is logged as a webhook run)
    sync_pushed: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()


class PushChannel(Base):
    """A push notification channel on one synced calendar (Google
    events.watch, a Graph subscription) or one mailbox (a Graph subscription).

    The channel's token (Graph: its ``clientState``) is a secret shared with
    the provider: only its SHA-256 is stored, enough to check a notification.
    ``last_message`` is the highest message number seen (Google) and
    ``recent`` the digests of the latest change notifications (Graph), so a
    replayed notification triggers nothing.
    """

    __tablename__ = "push_channels"
    __table_args__ = (
        CheckConstraint(
            "(calendar_account_id IS NULL) <> (email_account_id IS NULL)",
            name="one_owner",
        ),
        {"info": {"tenancy": "personal"}},
    )

    id: Mapped[uuid.UUID] = _id()
    organization_id: Mapped[uuid.UUID] = _org_fk()
    user_id: Mapped[uuid.UUID] = _user_fk()
    calendar_account_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("calendar_accounts.id", ondelete="CASCADE"), index=True
    )
    email_account_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("email_accounts.id", ondelete="CASCADE"), index=True
    )
    provider: Mapped[str] = mapped_column(String(20))
    #: the id the provider echoes in each notification
    channel_id: Mapped[str] = mapped_column(String(64), unique=True)
    #: the provider's id of the watched collection (to stop the channel)
    resource_id: Mapped[str] = mapped_column(String(200))
    #: SHA-256 (hex) of the channel's token
    token_sha256: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[dt.datetime | None]
    last_message: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    #: space-separated digests of the latest change notifications (Graph)
    recent: Mapped[str] = mapped_column(Text, default="", server_default="")
    created_at: Mapped[dt.datetime] = _created()


class CalendarEventMapping(Base):
    """One synced event: the sync status row of its ident (``sync/status.py``)."""

    __tablename__ = "calendar_event_mappings"
    __table_args__ = (
        UniqueConstraint("calendar_account_id", "external_event_id"),
        UniqueConstraint("calendar_account_id", "ical_uid"),
        {"info": {"tenancy": "personal"}},
    )

    id: Mapped[uuid.UUID] = _id()
    organization_id: Mapped[uuid.UUID] = _org_fk()
    user_id: Mapped[uuid.UUID] = _user_fk()
    appointment_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("appointments.id", ondelete="SET NULL"), index=True
    )
    calendar_account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("calendar_accounts.id", ondelete="CASCADE"), index=True
    )
    external_event_id: Mapped[str] = mapped_column(String(1024))
    external_event_etag: Mapped[str | None] = mapped_column(String(500))
    #: the event's iCalendar UID: the sync ident
    ical_uid: Mapped[str] = mapped_column(String(1024), default="", server_default="")
    #: the appointment id as the sync saw it (kept when the appointment is gone)
    crm_item_id: Mapped[str] = mapped_column(String(64), default="", server_default="")
    #: the appointment's version at the last sync (None: the write gave none)
    crm_version: Mapped[str | None] = mapped_column(String(64))
    #: content hashes (``CalendarEvent.content_hash``) of both sides then
    crm_hash: Mapped[str] = mapped_column(String(64), default="", server_default="")
    external_hash: Mapped[str] = mapped_column(
        String(64), default="", server_default=""
    )
    sync_direction: Mapped[str] = mapped_column(String(20), default="two_way")
    sync_status: Mapped[str] = mapped_column(String(20), default="synced")
    last_synced: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = _created()


class CalendarSyncLog(Base):
    __tablename__ = "calendar_sync_log"
    __table_args__ = {"info": {"tenancy": "personal"}}  # noqa: RUF012

    id: Mapped[uuid.UUID] = _id()
    organization_id: Mapped[uuid.UUID] = _org_fk()
    user_id: Mapped[uuid.UUID] = _user_fk()
    calendar_account_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("calendar_accounts.id", ondelete="CASCADE"), index=True
    )
    sync_type: Mapped[str] = mapped_column(String(20))
    sync_direction: Mapped[str] = mapped_column(String(20))
    events_imported: Mapped[int] = mapped_column(Integer, default=0)
    events_exported: Mapped[int] = mapped_column(Integer, default=0)
    events_updated: Mapped[int] = mapped_column(Integer, default=0)
    events_deleted: Mapped[int] = mapped_column(Integer, default=0)
    conflicts: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(20), default="running")
    started_at: Mapped[dt.datetime] = _created()
    finished_at: Mapped[dt.datetime | None]
    duration_ms: Mapped[int | None] = mapped_column(Integer)


class CalendarSyncConflict(Base):
    """An event both sides changed differently, waiting for a person (strategy
    ``manual``); one row per calendar account and event."""

    __tablename__ = "calendar_sync_conflicts"
    __table_args__ = (
        UniqueConstraint("calendar_account_id", "ical_uid"),
        CheckConstraint("status IN ('open', 'resolved')", name="status"),
        CheckConstraint(
            "resolution IS NULL OR resolution IN ('keep_crm', 'keep_calendar')",
            name="resolution",
        ),
        {"info": {"tenancy": "personal"}},
    )

    id: Mapped[uuid.UUID] = _id()
    organization_id: Mapped[uuid.UUID] = _org_fk()
    user_id: Mapped[uuid.UUID] = _user_fk()
    calendar_account_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("calendar_accounts.id", ondelete="CASCADE"), index=True
    )
    ical_uid: Mapped[str] = mapped_column(String(1024))
    appointment_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("appointments.id", ondelete="SET NULL")
    )
    external_event_id: Mapped[str] = mapped_column(String(1024))
    #: both versions as the conflict was found (``store/calendar_json.py``)
    crm_version: Mapped[str] = mapped_column(String(64))
    crm_event: Mapped[dict[str, Any]] = mapped_column()
    crm_updated_at: Mapped[dt.datetime | None]
    calendar_version: Mapped[str] = mapped_column(String(500))
    calendar_event: Mapped[dict[str, Any]] = mapped_column()
    calendar_updated_at: Mapped[dt.datetime | None]
    status: Mapped[str] = mapped_column(String(20), default="open")
    #: the person's choice; applied by the next sync while both versions are
    #: still the ones shown
    resolution: Mapped[str | None] = mapped_column(String(20))
    created_at: Mapped[dt.datetime] = _created()
    resolved_at: Mapped[dt.datetime | None]


class VaultKey(Base):
    """One canary per encryption key id: a known value sealed with that key.

    At start-up every configured key opens its canary, so a wrong key is caught
    before any user secret is touched; a new current key gets a canary.
    """

    __tablename__ = "vault_keys"
    __table_args__ = {"info": {"tenancy": "system"}}  # noqa: RUF012

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    canary: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created()


def tenancy_of(table_name: str) -> Tenancy:
    """The tenancy class a table declared."""
    info = Base.metadata.tables[table_name].info
    result: Tenancy = info["tenancy"]
    return result


#: (table, column) pairs that hold vault ciphertext; ``keys rotate`` walks them
ENCRYPTED_COLUMNS: tuple[tuple[type[Base], str], ...] = (
    (UserIntegration, "access_token"),
    (UserIntegration, "refresh_token"),
    (UserIntegration, "password"),
    (OAuthSecret, "client_secret"),
    (OAuthFlow, "code_verifier"),
)
