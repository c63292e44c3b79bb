"""The Google part of the sandbox state: one :class:`GoogleStore` per SandboxState.

It bundles the OAuth :class:`~crmflow.sandbox.google.identity.Identity`, the
Calendar :class:`~crmflow.sandbox.google.calendars.Calendars` (with its
:class:`~crmflow.sandbox.google.listing.EventLister`), the Gmail
:class:`~crmflow.sandbox.google.mail.Mail` and the push channels, persists them
as the ``google`` section of the state file, and wires calendar changes to
push notifications.

Get it with ``state.extension(GoogleStore)``; use it under ``state.lock``.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from crmflow.sandbox.google.calendardata import CalendarsData, StoredCalendar
from crmflow.sandbox.google.calendars import Calendars
from crmflow.sandbox.google.identity import Identity, IdentityData
from crmflow.sandbox.google.listing import EventLister
from crmflow.sandbox.google.mail import Mail, MailData
from crmflow.sandbox.google.push import PushData, PushDispatcher
from crmflow.sandbox.state import SandboxState, SandboxUser, StateExtension

__all__ = ["GoogleStore"]

_IDENTITY = TypeAdapter(IdentityData)
_CALENDARS = TypeAdapter(CalendarsData)
_MAIL = TypeAdapter(MailData)
_PUSH = TypeAdapter(PushData)


class GoogleStore(StateExtension):
    """Google data of one sandbox. See the module docstring."""

    key = "google"

    def __init__(self, state: SandboxState) -> None:
        super().__init__(state)
        self.identity = Identity()
        self.calendars = Calendars()
        self.listing = EventLister(self.calendars)
        self.mail = Mail(random_int=state.faults.random_int)
        self.push_data = PushData()
        self.push = PushDispatcher(state, self.push_data)
        self.calendars.listeners.append(self._calendar_changed)
        for user in state.users.values():
            self.on_user_added(user)

    def _calendar_changed(self, cal: StoredCalendar) -> None:
        self.state.mark_dirty()
        self.push.calendar_changed(cal.id, self.state.clock.now_ms())

    def on_user_added(self, user: SandboxUser) -> None:
        """Every sandbox user has a primary calendar and a mailbox."""
        self.calendars.ensure_primary(user.email)
        self.mail.mailbox(user.email)

    def snapshot(self) -> Any:
        """The persisted form of all Google data."""
        return {
            "identity": _IDENTITY.dump_python(self.identity.data, mode="json"),
            "calendars": _CALENDARS.dump_python(self.calendars.data, mode="json"),
            "mail": _MAIL.dump_python(self.mail.data, mode="json"),
            "push": _PUSH.dump_python(self.push_data, mode="json"),
        }

    def restore(self, data: Any) -> None:
        """Load a :meth:`snapshot`."""
        self.identity.data = _IDENTITY.validate_python(data.get("identity", {}))
        self.calendars.data = _CALENDARS.validate_python(data.get("calendars", {}))
        self.mail.data = _MAIL.validate_python(data.get("mail", {}))
        restored = _PUSH.validate_python(data.get("push", {}))
        self.push_data.channels = restored.channels

    def reset(self) -> None:
        """Forget everything (clients included)."""
        self.identity.data = IdentityData()
        self.calendars.data = CalendarsData()
        self.mail.data = MailData()
        self.push_data.channels.clear()
        self.push.deliveries.clear()
