"""Demo data: a realistic Google calendar and mailbox for one sandbox user.

``seed_demo_google(state, email)`` (called by ``crmflow demo``) creates, relative
to the current week, in the user's zone:

* "Team Standup" — weekly on Mondays 09:30, started three weeks ago, with next
  week's occurrence moved to Tuesday 10:00 and the one after cancelled
  (Google exceptions with ``recurringEventId`` / ``originalStartTime``);
* "Company Offsite" — an all-day event on Thursday (``date``, exclusive end);
* "Client Call" events in two other time zones (New York and Tokyo);
* a mailbox with a few threads: a client proposal conversation (incoming,
  reply sent, follow-up), a contract with a PDF attachment, and a newsletter.

Everything goes through the same rules as the API. The function is idempotent:
a second call for the same user changes nothing.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from zoneinfo import ZoneInfo

from crmflow.sandbox.google.calendardata import StoredCalendar
from crmflow.sandbox.google.eventtime import zone
from crmflow.sandbox.google.store import GoogleStore
from crmflow.sandbox.state import SandboxState

__all__ = ["DemoGoogle", "seed_demo_google"]

#: client-chosen ids must be base32hex (a-v, 0-9)
STANDUP_ID = "demostandup0001"
OFFSITE_ID = "demooffsite0001"
CALL_NY_ID = "democallusa0001"
CALL_TOKYO_ID = "democalljapan01"
#: the minimal PDF used as the contract attachment
_PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"


@dataclass(frozen=True)
class DemoGoogle:
    """What :func:`seed_demo_google` created (ids for the demo and tests)."""

    email: str
    calendar_id: str
    standup_id: str
    moved_instance_id: str
    cancelled_instance_id: str
    offsite_id: str
    client_call_ids: tuple[str, str]
    thread_ids: tuple[str, ...]


def _wall(day: date, at: time, tz_name: str) -> dict[str, str]:
    return {
        "dateTime": datetime.combine(day, at).strftime("%Y-%m-%dT%H:%M:%S"),
        "timeZone": tz_name,
    }


def seed_demo_google(
    state: SandboxState, email: str, *, time_zone: str = "Europe/Zurich"
) -> DemoGoogle:
    """Seed the demo calendar and mailbox of ``email`` (created if new). Idempotent.

    Args:
        state: the sandbox state.
        email: the demo login's Google account.
        time_zone: the user's zone (their primary calendar's zone).

    Returns:
        The ids of what was created (or already existed).
    """
    user = state.add_user(email)
    tz = zone(time_zone)
    with state.lock:
        store = state.extension(GoogleStore)
        cals = store.calendars
        cal = cals.ensure_primary(user.email)
        now = state.clock.now().astimezone(tz)
        monday = now.date() - timedelta(days=now.weekday())
        first_standup = monday - timedelta(weeks=3)
        moved_day = monday + timedelta(weeks=1)
        cancelled_day = monday + timedelta(weeks=2)
        moved_id = f"{STANDUP_ID}_{_utc_suffix(moved_day, time(9, 30), tz)}"
        cancelled_id = f"{STANDUP_ID}_{_utc_suffix(cancelled_day, time(9, 30), tz)}"
        if STANDUP_ID not in cal.events:
            cal.time_zone = time_zone
            _seed_calendar(
                state, cal, monday, first_standup, moved_id, cancelled_id, time_zone
            )
        box = store.mail.mailbox(user.email)
        if not box.messages:
            _seed_mailbox(state, user.email, now)
        threads = tuple(
            dict.fromkeys(
                m.thread_id
                for m in sorted(box.messages.values(), key=lambda m: m.internal_date_ms)
            )
        )
        state.mark_dirty()
    return DemoGoogle(
        email=user.email,
        calendar_id=cal.id,
        standup_id=STANDUP_ID,
        moved_instance_id=moved_id,
        cancelled_instance_id=cancelled_id,
        offsite_id=OFFSITE_ID,
        client_call_ids=(CALL_NY_ID, CALL_TOKYO_ID),
        thread_ids=threads,
    )


def _utc_suffix(day: date, at: time, tz: ZoneInfo) -> str:
    local = datetime.combine(day, at, tzinfo=tz)
    return local.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _seed_calendar(
    state: SandboxState,
    cal: StoredCalendar,
    monday: date,
    first_standup: date,
    moved_id: str,
    cancelled_id: str,
    tz_name: str,
) -> None:
    cals = state.extension(GoogleStore).calendars
    now_ms = state.clock.now_ms()
    cals.insert(
        cal,
        {
            "id": STANDUP_ID,
            "summary": "Team Standup",
            "description": "Daily sync of the sales team. Agenda in the team doc.",
            "location": "Meeting room Limmat / Google Meet",
            "start": _wall(first_standup, time(9, 30), tz_name),
            "end": _wall(first_standup, time(9, 45), tz_name),
            "recurrence": ["RRULE:FREQ=WEEKLY;BYDAY=MO"],
            "attendees": [
                {"email": cal.owner, "responseStatus": "accepted"},
                {"email": "maria.rossi@example.com", "displayName": "Maria Rossi"},
                {"email": "jonas.meier@example.com", "displayName": "Jonas Meier"},
            ],
        },
        now_ms=now_ms,
    )
    moved_day = monday + timedelta(weeks=1, days=1)
    cals.write(
        cal,
        moved_id,
        {
            "start": _wall(moved_day, time(10, 0), tz_name),
            "end": _wall(moved_day, time(10, 15), tz_name),
        },
        patch=True,
        if_match=None,
        now_ms=state.clock.now_ms(),
    )
    cals.delete(cal, cancelled_id, if_match=None, now_ms=state.clock.now_ms())
    thursday = monday + timedelta(days=3)
    cals.insert(
        cal,
        {
            "id": OFFSITE_ID,
            "summary": "Company Offsite",
            "location": "Rigi Kulm",
            "start": {"date": thursday.isoformat()},
            "end": {"date": (thursday + timedelta(days=1)).isoformat()},
            "transparency": "transparent",
        },
        now_ms=state.clock.now_ms(),
    )
    wednesday = monday + timedelta(days=2)
    cals.insert(
        cal,
        {
            "id": CALL_NY_ID,
            "summary": "Client Call — ACME Corp (New York)",
            "description": "Renewal discussion with ACME's procurement team.",
            "start": _wall(wednesday, time(10, 0), "America/New_York"),
            "end": _wall(wednesday, time(10, 45), "America/New_York"),
            "attendees": [
                {"email": "jane.doe@acme.example", "displayName": "Jane Doe"}
            ],
            "extendedProperties": {"shared": {"customer": "ACME Corp"}},
        },
        now_ms=state.clock.now_ms(),
    )
    friday = monday + timedelta(days=4)
    cals.insert(
        cal,
        {
            "id": CALL_TOKYO_ID,
            "summary": "Client Call — Sakura Trading (Tokyo)",
            "start": _wall(friday, time(9, 0), "Asia/Tokyo"),
            "end": _wall(friday, time(9, 30), "Asia/Tokyo"),
            "attendees": [
                {"email": "k.tanaka@sakura.example", "displayName": "Kenji Tanaka"}
            ],
        },
        now_ms=state.clock.now_ms(),
    )


def _message(
    *,
    sender: str,
    to: str,
    subject: str,
    text: str,
    when: datetime,
    reply_to: EmailMessage | None = None,
    attachment: tuple[str, str, bytes] | None = None,
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[-1].rstrip(">"))
    if reply_to is not None:
        msg["In-Reply-To"] = str(reply_to["Message-ID"])
        msg["References"] = str(reply_to["Message-ID"])
    msg.set_content(text)
    if attachment is not None:
        name, mime_type, data = attachment
        maintype, _, subtype = mime_type.partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg


def _seed_mailbox(state: SandboxState, email: str, now: datetime) -> None:
    mail = state.extension(GoogleStore).mail
    box = mail.mailbox(email)
    client = "Jane Doe <jane.doe@acme.example>"
    start = now - timedelta(days=3)

    def receive(
        msg: EmailMessage, at: datetime, labels: list[str] | None = None
    ) -> None:
        mail.receive(
            box, msg.as_bytes(), labels=labels, now_ms=int(at.timestamp() * 1000)
        )

    proposal = _message(
        sender=client,
        to=email,
        subject="Proposal for Q3",
        text="Hi,\n\nplease find our requirements for Q3 below. Could you send a proposal by Friday?\n\nBest, Jane",
        when=start,
    )
    receive(proposal, start, labels=["INBOX", "CATEGORY_PERSONAL"])
    reply = _message(
        sender=email,
        to=client,
        subject="Re: Proposal for Q3",
        text="Hi Jane,\n\nthanks — you will have it by Thursday.\n\nCheers",
        when=start + timedelta(hours=2),
        reply_to=proposal,
    )
    thread = next(iter(box.messages.values())).thread_id
    mail.send_bytes(
        box,
        reply.as_bytes(),
        thread_id=thread,
        now=start + timedelta(hours=2),
        sandbox_users=set(state.users),
        mailbox_of=mail.mailbox,
    )
    follow_up = _message(
        sender=client,
        to=email,
        subject="Re: Proposal for Q3",
        text="Great, looking forward to it. Can we also discuss pricing on Wednesday's call?",
        when=start + timedelta(days=1),
        reply_to=reply,
    )
    receive(follow_up, start + timedelta(days=1))
    contract = _message(
        sender="Legal Team <legal@acme.example>",
        to=email,
        subject="Contract draft v2",
        text="Attached is the second draft of the framework contract.",
        when=start + timedelta(days=2),
        attachment=("contract-v2.pdf", "application/pdf", _PDF),
    )
    receive(contract, start + timedelta(days=2))
    newsletter = _message(
        sender="CRM Weekly <news@crmweekly.example>",
        to=email,
        subject="This week in CRM: 5 tips for better follow-ups",
        text="1. Follow up within 24 hours.\n2. Log every call.\n3. ...",
        when=start + timedelta(days=2, hours=5),
    )
    receive(
        newsletter,
        start + timedelta(days=2, hours=5),
        labels=["INBOX", "UNREAD", "CATEGORY_UPDATES"],
    )


def demo_attachment_b64() -> str:
    """The contract attachment's bytes, base64url (for tests)."""
    return base64.urlsafe_b64encode(_PDF).decode()
