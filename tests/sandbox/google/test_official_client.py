"""Google's official Python client against the sandbox, with nothing but the base URL changed.

Covers the issue's list: list with paging and sync tokens through a 410, insert
with client id and duplicate, patch with a stale etag (412), delete, watch;
Gmail send/list/get/history. Also the client's retry classification, which
reads ``error.errors[0].reason`` from the sandbox's envelopes.
"""

from __future__ import annotations

import base64
from email.message import EmailMessage

import pytest
from googleapiclient.errors import HttpError

from crmflow.sandbox.google.store import GoogleStore
from tests.sandbox.conftest import GoogleSandbox, WebhookReceiver

ADA = "ada@example.com"
BOB = "bob@example.com"


def _event(event_id: str | None = None, summary: str = "Call"):
    body = {
        "summary": summary,
        "start": {"dateTime": "2024-06-03T14:00:00", "timeZone": "Europe/Zurich"},
        "end": {"dateTime": "2024-06-03T14:30:00", "timeZone": "Europe/Zurich"},
    }
    if event_id:
        body["id"] = event_id
    return body


def _no_backoff(request):
    # googleapiclient sleeps rand() * 2**n between retries; make it zero so
    # the test waits for nothing.
    request._rand = lambda: 0.0
    return request


def test_list_pages_and_syncs_through_a_410(google: GoogleSandbox):
    cal = google.calendar_client(google.access(ADA))
    for i in range(25):
        cal.events().insert(calendarId="primary", body=_event(f"page{i:05d}")).execute()
    request = cal.events().list(calendarId="primary", maxResults=10)
    pages = []
    while request is not None:
        response = request.execute()
        pages.append(response)
        request = cal.events().list_next(request, response)
    assert [len(p["items"]) for p in pages] == [10, 10, 5]
    assert [("nextSyncToken" in p, "nextPageToken" in p) for p in pages] == [
        (False, True),
        (False, True),
        (True, False),
    ]
    token = pages[-1]["nextSyncToken"]

    cal.events().patch(
        calendarId="primary", eventId="page00003", body={"summary": "moved"}
    ).execute()
    cal.events().delete(calendarId="primary", eventId="page00004").execute()
    delta = cal.events().list(calendarId="primary", syncToken=token).execute()
    assert {e["id"]: e["status"] for e in delta["items"]} == {
        "page00003": "confirmed",
        "page00004": "cancelled",
    }

    google.control("POST", f"calendars/{ADA}/expire-sync-tokens")
    with pytest.raises(HttpError) as info:
        cal.events().list(
            calendarId="primary", syncToken=delta["nextSyncToken"]
        ).execute()
    assert info.value.status_code == 410
    assert info.value.error_details[0]["reason"] == "fullSyncRequired"
    full = cal.events().list(calendarId="primary", maxResults=2500).execute()
    assert len(full["items"]) == 24
    assert "nextSyncToken" in full


def test_insert_with_client_id_duplicate_and_delete(google: GoogleSandbox):
    cal = google.calendar_client(google.access(ADA))
    created = (
        cal.events()
        .insert(calendarId="primary", body=_event("crmclient0001"), sendUpdates="none")
        .execute()
    )
    assert created["id"] == "crmclient0001"
    with pytest.raises(HttpError) as info:
        cal.events().insert(
            calendarId="primary", body=_event("crmclient0001")
        ).execute()
    assert info.value.status_code == 409
    assert (
        cal.events().delete(calendarId="primary", eventId="crmclient0001").execute()
        == ""
    )
    assert (
        cal.events()
        .get(calendarId="primary", eventId="crmclient0001")
        .execute()["status"]
        == "cancelled"
    )
    with pytest.raises(HttpError) as gone:
        cal.events().delete(calendarId="primary", eventId="crmclient0001").execute()
    assert gone.value.status_code == 410
    assert gone.value.error_details[0]["reason"] == "deleted"
    with pytest.raises(HttpError) as dup:
        cal.events().insert(
            calendarId="primary", body=_event("crmclient0001")
        ).execute()
    assert dup.value.status_code == 409


def test_patch_with_stale_etag_is_412(google: GoogleSandbox):
    cal = google.calendar_client(google.access(ADA))
    created = (
        cal.events().insert(calendarId="primary", body=_event("etagclient01")).execute()
    )
    cal.events().patch(
        calendarId="primary",
        eventId="etagclient01",
        body={"summary": "by someone else"},
    ).execute()
    request = cal.events().patch(
        calendarId="primary", eventId="etagclient01", body={"summary": "mine"}
    )
    request.headers["If-Match"] = created["etag"]
    with pytest.raises(HttpError) as info:
        request.execute()
    assert info.value.status_code == 412
    assert info.value.error_details[0]["reason"] == "conditionNotMet"
    current = cal.events().get(calendarId="primary", eventId="etagclient01").execute()
    retry = cal.events().patch(
        calendarId="primary", eventId="etagclient01", body={"summary": "mine"}
    )
    retry.headers["If-Match"] = current["etag"]
    assert retry.execute()["summary"] == "mine"


def test_recurring_instances_with_official_client(google: GoogleSandbox):
    cal = google.calendar_client(google.access(ADA))
    series = _event("series00001", "Team Standup")
    series["recurrence"] = ["RRULE:FREQ=WEEKLY;COUNT=3"]
    cal.events().insert(calendarId="primary", body=series).execute()
    instances = (
        cal.events().instances(calendarId="primary", eventId="series00001").execute()
    )
    assert [i["id"] for i in instances["items"]] == [
        "series00001_20240603T120000Z",
        "series00001_20240610T120000Z",
        "series00001_20240617T120000Z",
    ]


def test_watch_and_stop_with_official_client(
    google: GoogleSandbox, webhook: WebhookReceiver
):
    cal = google.calendar_client(google.access(ADA))
    channel = (
        cal.events()
        .watch(
            calendarId="primary",
            body={"id": "official-chan", "type": "web_hook", "address": webhook.url},
        )
        .execute()
    )
    assert channel["kind"] == "api#channel"
    assert webhook.wait_for(1)[0].headers["x-goog-resource-state"] == "sync"
    cal.events().insert(calendarId="primary", body=_event()).execute()
    assert webhook.wait_for(2)[1].headers["x-goog-resource-state"] == "exists"
    assert (
        cal.channels()
        .stop(body={"id": channel["id"], "resourceId": channel["resourceId"]})
        .execute()
        == ""
    )


def test_calendar_list_with_official_client(google: GoogleSandbox):
    cal = google.calendar_client(google.access(ADA))
    entries = cal.calendarList().list().execute()["items"]
    assert entries[0]["id"] == ADA
    assert entries[0]["primary"] is True


def test_client_retries_rate_limits_and_5xx_by_reason(google: GoogleSandbox):
    cal = google.calendar_client(google.access(ADA))
    for kind in (
        "rate_limit_403",
        "rate_limit_429",
        "user_rate_limit",
        "backend_error",
        "unavailable",
    ):
        google.add_fault(kind=kind, user=ADA, count=1)
        assert "items" in _no_backoff(cal.events().list(calendarId="primary")).execute(
            num_retries=1
        )
    # quotaExceeded is not retried by the client.
    google.add_fault(kind="quota_exceeded", user=ADA, count=1)
    with pytest.raises(HttpError) as info:
        _no_backoff(cal.events().list(calendarId="primary")).execute(num_retries=1)
    assert info.value.status_code == 403
    assert info.value.reason == "Calendar usage limits exceeded."


def _raw(sender: str, to: str, subject: str, text: str, **headers: str) -> str:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(text)
    return base64.urlsafe_b64encode(msg.as_bytes()).decode()


def test_gmail_send_list_get_history(google: GoogleSandbox):
    ada = google.gmail_client(google.access(ADA))
    bob = google.gmail_client(google.access(BOB))
    start = bob.users().getProfile(userId="me").execute()["historyId"]
    sent = (
        ada.users()
        .messages()
        .send(userId="me", body={"raw": _raw(ADA, BOB, "Hello Bob", "First line")})
        .execute()
    )
    assert sent["labelIds"] == ["SENT"]
    listed = bob.users().messages().list(userId="me", q="from:" + ADA).execute()
    assert listed["resultSizeEstimate"] == 1
    message = (
        bob.users()
        .messages()
        .get(userId="me", id=listed["messages"][0]["id"])
        .execute()
    )
    assert message["snippet"] == "First line"
    assert (
        base64.urlsafe_b64decode(message["payload"]["body"]["data"]) == b"First line\n"
    )
    history = bob.users().history().list(userId="me", startHistoryId=start).execute()
    assert history["history"][0]["messagesAdded"][0]["message"]["id"] == message["id"]
    bob.users().messages().modify(
        userId="me", id=message["id"], body={"removeLabelIds": ["UNREAD"]}
    ).execute()
    later = (
        bob.users()
        .history()
        .list(
            userId="me",
            startHistoryId=history["historyId"],
            historyTypes="labelRemoved",
        )
        .execute()
    )
    assert later["history"][0]["labelsRemoved"][0]["labelIds"] == ["UNREAD"]
    thread = (
        bob.users()
        .threads()
        .get(userId="me", id=message["threadId"], format="minimal")
        .execute()
    )
    assert [m["id"] for m in thread["messages"]] == [message["id"]]
    labels = {
        label["id"]
        for label in bob.users().labels().list(userId="me").execute()["labels"]
    }
    assert {"INBOX", "UNREAD", "SENT"} <= labels

    google.control("POST", f"mailboxes/{BOB}/expire-history")
    with pytest.raises(HttpError) as info:
        bob.users().history().list(userId="me", startHistoryId=start).execute()
    assert info.value.status_code == 404


def test_gmail_attachment_with_official_client(google: GoogleSandbox):
    google.state.add_user(ADA)
    data = base64.urlsafe_b64encode(b"hello attachment").decode()
    google.deliver_mail(
        ADA,
        to=ADA,
        subject="file",
        text="see file",
        attachments=[{"filename": "a.txt", "mimeType": "text/plain", "data": data}],
    )
    gmail = google.gmail_client(google.access(ADA))
    ref = (
        gmail.users()
        .messages()
        .list(userId="me", q="has:attachment")
        .execute()["messages"][0]
    )
    message = gmail.users().messages().get(userId="me", id=ref["id"]).execute()
    part = next(p for p in message["payload"]["parts"] if p["filename"] == "a.txt")
    got = (
        gmail.users()
        .messages()
        .attachments()
        .get(userId="me", messageId=ref["id"], id=part["body"]["attachmentId"])
        .execute()
    )
    assert base64.urlsafe_b64decode(got["data"]) == b"hello attachment"
    with google.state.lock:
        assert google.state.extension(GoogleStore).mail.mailbox(ADA).messages
