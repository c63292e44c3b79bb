"""Demo data for ``crmflow demo``: an Outlook calendar and a mailbox for one Microsoft user.

The seed exercises what the Outlook adapters must handle (microsoft-graph.md
§2, §11):

* a weekly series (Mon/Wed, ten occurrences) in "W. Europe Standard Time" with
  one moved occurrence (an ``exception``) and one cancelled occurrence;
* an all-day event (midnight to midnight, exclusive end);
* single events in Windows-named zones ("Pacific Standard Time",
  "India Standard Time") and one tagged with a single-value extended property;
* a mailbox with a few received messages (one unread, one with an
  attachment), a sent message and a draft.

Dates are relative to the sandbox clock's current week so the demo always
shows something "this week". Seeding is idempotent per user: a second call
does nothing when the user's calendar already has events.
"""

from __future__ import annotations

import base64
from datetime import datetime, timedelta

from crmflow.sandbox.microsoft.store import MicrosoftStore
from crmflow.sandbox.microsoft.timezones import format_local, resolve_zone
from crmflow.sandbox.state import SandboxState

__all__ = ["DEMO_EXTENDED_PROPERTY", "seed_demo_microsoft"]

#: the extended property crmflow tags events with (extended-properties-overview.md id format)
DEMO_EXTENDED_PROPERTY = "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name CrmId"


def _local(day: datetime, hour: int, minute: int = 0) -> str:
    return format_local(day.replace(hour=hour, minute=minute, second=0, microsecond=0))


def seed_demo_microsoft(state: SandboxState, email: str) -> dict[str, int]:
    """Create ``email`` (if needed) and fill their Outlook calendar and mailbox.

    Returns:
        Counts of what was created (``{"events": n, "messages": m}``); zeros
        when the user was already seeded.
    """
    user = state.add_user(email)
    with state.lock:
        store = state.extension(MicrosoftStore)
        cals = store.calendars(user.email)
        if cals.data.events:
            return {"events": 0, "messages": 0}
        now = state.clock.now()
        berlin = resolve_zone("W. Europe Standard Time")
        monday = (
            now.astimezone(berlin) - timedelta(days=now.astimezone(berlin).weekday())
        ).replace(tzinfo=None)
        series = cals.create(
            {
                "subject": "Pipeline review",
                "body": {
                    "contentType": "html",
                    "content": "<p>Weekly pipeline review.</p>",
                },
                "start": {
                    "dateTime": _local(monday, 9, 30),
                    "timeZone": "W. Europe Standard Time",
                },
                "end": {
                    "dateTime": _local(monday, 10, 0),
                    "timeZone": "W. Europe Standard Time",
                },
                "location": {"displayName": "Room Ada"},
                "attendees": [
                    {
                        "type": "required",
                        "emailAddress": {
                            "address": "sales@contoso.example",
                            "name": "Sales",
                        },
                    }
                ],
                "recurrence": {
                    "pattern": {
                        "type": "weekly",
                        "interval": 1,
                        "daysOfWeek": ["Monday", "Wednesday"],
                    },
                    "range": {
                        "type": "numbered",
                        "startDate": monday.date().isoformat(),
                        "numberOfOccurrences": 10,
                    },
                },
            },
            calendar_id=None,
            now=now,
        )
        occurrences = cals.instances(
            series.event, series.event.start, series.event.start + timedelta(days=28)
        )
        if len(occurrences) >= 3:
            moved = occurrences[1]
            new_start = moved.start.astimezone(berlin) + timedelta(hours=2)
            cals.update(
                moved.id,
                {
                    "subject": "Pipeline review (moved)",
                    "start": {
                        "dateTime": format_local(new_start.replace(tzinfo=None)),
                        "timeZone": "W. Europe Standard Time",
                    },
                    "end": {
                        "dateTime": format_local(
                            (new_start + timedelta(minutes=30)).replace(tzinfo=None)
                        ),
                        "timeZone": "W. Europe Standard Time",
                    },
                },
                if_match=None,
                now=now,
            )
            cals.delete(occurrences[2].id, if_match=None, now=now)
        friday = monday + timedelta(days=4)
        cals.create(
            {
                "subject": "Company offsite",
                "isAllDay": True,
                "start": {"dateTime": _local(friday, 0), "timeZone": "UTC"},
                "end": {
                    "dateTime": _local(friday + timedelta(days=1), 0),
                    "timeZone": "UTC",
                },
                "showAs": "oof",
            },
            calendar_id=None,
            now=now,
        )
        tuesday = monday + timedelta(days=1)
        cals.create(
            {
                "subject": "Call with Fabrikam (Seattle)",
                "start": {
                    "dateTime": _local(tuesday, 8),
                    "timeZone": "Pacific Standard Time",
                },
                "end": {
                    "dateTime": _local(tuesday, 9),
                    "timeZone": "Pacific Standard Time",
                },
                "singleValueExtendedProperties": [
                    {"id": DEMO_EXTENDED_PROPERTY, "value": "deal-1042"}
                ],
            },
            calendar_id=None,
            now=now,
        )
        thursday = monday + timedelta(days=3)
        cals.create(
            {
                "subject": "Onboarding, Bengaluru team",
                "start": {
                    "dateTime": _local(thursday, 15, 30),
                    "timeZone": "India Standard Time",
                },
                "end": {
                    "dateTime": _local(thursday, 16, 30),
                    "timeZone": "India Standard Time",
                },
            },
            calendar_id=None,
            now=now,
        )
        box = store.mail(user.email)
        inbox = box.folder("inbox")
        incoming = [
            (
                "alice@contoso.example",
                "Quote for 20 seats",
                "Could you send the updated quote?",
                False,
            ),
            (
                "bob@fabrikam.example",
                "Meeting notes",
                "Notes from Tuesday's call attached.",
                True,
            ),
            ("news@example.org", "Monthly newsletter", "What's new this month.", False),
        ]
        for index, (sender, subject, text, attach) in enumerate(incoming):
            msg = box._new_message(
                {
                    "subject": subject,
                    "body": {"contentType": "text", "content": text},
                    "toRecipients": [
                        {"emailAddress": {"address": user.email, "name": user.name}}
                    ],
                },
                folder=inbox,
                now=now - timedelta(hours=index + 1),
                draft=False,
            )
            msg.sender = {"emailAddress": {"name": sender, "address": sender}}
            if attach:
                msg.attachments.append(
                    box._attachment_from_json(
                        {
                            "@odata.type": "#microsoft.graph.fileAttachment",
                            "name": "notes.txt",
                            "contentType": "text/plain",
                            "contentBytes": base64.b64encode(
                                b"Action items: send quote."
                            ).decode(),
                        },
                        now,
                    )
                )
            delivered = box.deliver(msg, now - timedelta(hours=index + 1))
            delivered.is_read = index != 0
        box.send_new(
            {
                "subject": "Re: Quote for 20 seats",
                "body": {"contentType": "text", "content": "Sending it today."},
                "toRecipients": [
                    {"emailAddress": {"address": "alice@contoso.example"}}
                ],
            },
            save=True,
            now=now,
        )
        box.create_draft(
            {
                "subject": "Follow-up",
                "body": {"contentType": "text", "content": "Draft text"},
            },
            folder_key="drafts",
            now=now,
        )
        state.mark_dirty()
        return {"events": len(cals.data.events), "messages": len(box.data.messages)}
