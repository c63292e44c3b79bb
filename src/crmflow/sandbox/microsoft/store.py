"""``MicrosoftStore``: the Microsoft half of a :class:`~crmflow.sandbox.state.SandboxState`.

A :class:`~crmflow.sandbox.state.StateExtension` (persistence section
``"microsoft"``) holding the identity platform's data, one mailbox per sandbox
user (calendars, events, mail folders, messages), change-notification
subscriptions and delta-query state. Users are shared with the other vendors:
a mailbox is created when a user is added (or on first use).

Runtime-only parts, never persisted: :class:`GraphSettings` (timeouts and
limits, adjustable for tests), the Graph fault plan, in-flight request counts,
the notification queue and the id_token signing key.

Every access must hold ``state.lock``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import TypeAdapter

from crmflow.sandbox.microsoft._ids import object_id
from crmflow.sandbox.microsoft.delta import DeltaData
from crmflow.sandbox.microsoft.events import CalendarData, Calendars
from crmflow.sandbox.microsoft.faults import GraphFaultPlan
from crmflow.sandbox.microsoft.identity import (
    Identity,
    IdentityData,
    is_personal,
)
from crmflow.sandbox.microsoft.mail import Mailboxes, MailData
from crmflow.sandbox.microsoft.subscriptions import SubscriptionData
from crmflow.sandbox.microsoft.tokens import SigningKey
from crmflow.sandbox.state import SandboxState, SandboxUser, StateExtension

__all__ = ["GraphSettings", "Mailbox", "MicrosoftStore"]


@dataclass
class GraphSettings:
    """Timeouts and limits; defaults are Microsoft's documented values.

    Changed with ``PATCH {base}/_sandbox/config`` or by passing ``settings`` to
    :func:`~crmflow.sandbox.microsoft.app.create_microsoft_app`.
    """

    #: the validation handshake must be answered "within 10 seconds"
    validation_timeout_s: float = 10.0
    #: notifications must be acknowledged "within 3 seconds"
    notification_timeout_s: float = 3.0
    #: first retry delay of an unacknowledged notification, doubled per attempt
    #: (Graph retries "multiple times, for up to 4 hours"; the schedule is undocumented)
    notification_retry_base_s: float = 60.0
    #: attempts per notification before it is dropped (then a ``missed`` lifecycle event)
    notification_max_attempts: int = 8
    #: how often the delivery loop looks for work
    dispatch_interval_s: float = 0.05
    #: fixed access-token lifetime; None = random 60-90 minutes (documented)
    access_token_lifetime_s: int | None = None
    #: Outlook: "4 concurrent requests" per app and mailbox
    mailbox_concurrency: int = 4
    #: Outlook: "10,000 API requests per 10 minutes" per app and mailbox
    mailbox_request_limit: int = 10_000
    mailbox_request_window_s: float = 600.0
    #: observed live ceiling for Outlook subscriptions (microsoft-graph.md §5.2)
    max_subscription_minutes: int = 10_070
    #: reauthorizationRequired is sent this long before a subscription expires
    reauthorization_notice_s: float = 3600.0
    #: delta tokens older than this answer 410; None = no age limit (Outlook:
    #: "dependent on the size of the internal delta token cache")
    delta_token_max_age_s: float | None = None
    #: delta tokens kept per mailbox; older ones answer 410 (the "cache size")
    delta_tokens_per_mailbox: int = 500


@dataclass
class Mailbox:
    """One user's Exchange mailbox."""

    email: str
    calendar: CalendarData = field(default_factory=CalendarData)
    mail: MailData = field(default_factory=MailData)


@dataclass
class MicrosoftData:
    """Everything persisted."""

    identity: IdentityData = field(default_factory=IdentityData)
    mailboxes: dict[str, Mailbox] = field(default_factory=dict)
    subscriptions: SubscriptionData = field(default_factory=SubscriptionData)
    delta: DeltaData = field(default_factory=DeltaData)


_DATA = TypeAdapter(MicrosoftData)


class MicrosoftStore(StateExtension):
    """Microsoft data inside a sandbox state. Use under ``state.lock``."""

    key: ClassVar[str] = "microsoft"

    def __init__(self, state: SandboxState) -> None:
        super().__init__(state)
        self.data = MicrosoftData()
        self.settings = GraphSettings()
        self.faults = GraphFaultPlan(state.faults)
        self.signing_key = SigningKey()
        #: in-flight Graph requests per mailbox (MailboxConcurrency)
        self.in_flight: dict[str, int] = {}
        #: request times per mailbox (10,000 per 10 minutes), sandbox-clock seconds
        self.request_times: dict[str, list[float]] = {}
        #: upload-session authtokens: token -> (email, session id)
        self.upload_tokens: dict[str, tuple[str, str]] = {}
        for user in state.users.values():
            self.on_user_added(user)

    # -- StateExtension ----------------------------------------------------------------

    def snapshot(self) -> Any:
        """JSON form of :class:`MicrosoftData`."""
        return _DATA.dump_python(self.data, mode="json")

    def restore(self, data: Any) -> None:
        """Load a :meth:`snapshot`."""
        self.data = _DATA.validate_python(data)

    def reset(self) -> None:
        """Forget everything (runtime settings are kept)."""
        self.data = MicrosoftData()
        self.in_flight.clear()
        self.request_times.clear()
        self.faults.clear()

    def on_user_added(self, user: SandboxUser) -> None:
        """Create the user's mailbox (default calendar and mail folders)."""
        self.mailbox(user.email)

    # -- accessors -------------------------------------------------------------------------

    @property
    def identity(self) -> Identity:
        """Identity rules over the persisted identity data."""
        return Identity(self.data.identity)

    def mailbox(self, email: str) -> Mailbox:
        """The user's mailbox, created on first use."""
        key = email.lower()
        box = self.data.mailboxes.get(key)
        if box is None:
            box = Mailbox(email=key)
            self.data.mailboxes[key] = box
            self.calendars(key).ensure_default()
            self.mail(key).ensure_folders()
        return box

    def owner(self, email: str) -> dict[str, Any]:
        """``{"emailAddress": {"name", "address"}}`` of a user."""
        user = self.state.users.get(email.lower())
        name = user.name if user else email
        return {"emailAddress": {"name": name, "address": email.lower()}}

    def calendars(self, email: str) -> Calendars:
        """Calendar rules for the user's mailbox."""
        return Calendars(self.mailbox(email).calendar, self.owner(email))

    def mail(self, email: str) -> Mailboxes:
        """Mail rules for the user's mailbox."""
        return Mailboxes(self.mailbox(email).mail, self.owner(email))

    def user_json(self, email: str) -> dict[str, Any]:
        """``GET /me``'s default properties (user-get.md)."""
        user = self.state.user(email)
        return {
            "businessPhones": [],
            "displayName": user.name,
            "givenName": user.given_name or None,
            "jobTitle": None,
            # "mail" being null for some personal accounts is reported but
            # unverified; the sandbox always fills it (docs/sandbox.md (Part 2))
            "mail": user.email,
            "mobilePhone": None,
            "officeLocation": None,
            "preferredLanguage": "en-US",
            "surname": user.family_name or None,
            "userPrincipalName": user.email,
            "id": object_id(user.email)
            if not is_personal(user.email)
            else object_id(user.email).replace("-", "")[:16],
        }

    @staticmethod
    def tenant_of(email: str) -> str:
        """The user's tenant id (``tid``)."""
        from crmflow.sandbox.microsoft.identity import tenant_of

        return tenant_of(email)

    def tenant_domains(self) -> set[str]:
        """Domains of the work tenant (any work user's domain)."""
        return {e.rsplit("@", 1)[1] for e in self.state.users if not is_personal(e)}

    def user_by_id(self, key: str) -> str | None:
        """Resolve ``/users/{id | userPrincipalName}`` to an email."""
        low = key.lower()
        if low in self.state.users:
            return low
        for email in self.state.users:
            if self.user_json(email)["id"] == low:
                return email
        return None
