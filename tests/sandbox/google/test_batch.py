"""Batch requests with the official client's BatchHttpRequest (batch_uri set explicitly)."""

from __future__ import annotations

from googleapiclient.http import BatchHttpRequest

from tests.sandbox.conftest import GoogleSandbox

ADA = "ada@example.com"


def test_gmail_batch_get_with_official_client(google: GoogleSandbox):
    google.state.add_user(ADA)
    ids = [
        google.deliver_mail(ADA, to=ADA, subject=f"m{i}", text=f"body {i}")["id"]
        for i in range(3)
    ]
    gmail = google.gmail_client(google.access(ADA))
    results: dict[str, object] = {}

    def collect(request_id, response, exception):
        results[request_id] = exception or response

    # google-apis.md §7.3 trap 1: the batch URI ignores api_endpoint.
    batch = BatchHttpRequest(callback=collect, batch_uri=google.base + "batch/gmail/v1")
    for message_id in [*ids, "0000000000000000"]:
        batch.add(
            gmail.users().messages().get(userId="me", id=message_id, format="minimal")
        )
    mark = google.state.requests.last_seq
    batch.execute()
    got = [results[str(i)] for i in range(1, 4)]
    assert [r["id"] for r in got] == ids
    missing = results["4"]
    assert missing.status_code == 404
    logged = google.logged(since=mark)
    assert [e["apiMethod"] for e in logged] == ["gmail.users.messages.get"] * 4 + [
        "gmail.batch"
    ]


def test_calendar_batch_insert_and_limits(google: GoogleSandbox):
    cal = google.calendar_client(google.access(ADA))
    results = {}

    def collect(request_id, response, exception):
        results[request_id] = exception or response

    batch = BatchHttpRequest(
        callback=collect,
        batch_uri=google.calendar_base.replace("calendar/v3/", "batch/calendar/v3"),
    )
    for i in range(3):
        batch.add(
            cal.events().insert(
                calendarId="primary",
                body={
                    "id": f"batch{i:04d}",
                    "start": {"dateTime": "2024-03-04T09:00:00Z"},
                    "end": {"dateTime": "2024-03-04T10:00:00Z"},
                },
            )
        )
    batch.execute()
    assert sorted(r["id"] for r in results.values()) == [
        "batch0000",
        "batch0001",
        "batch0002",
    ]
    body_parts = []
    boundary = "xyz"
    for i in range(51):
        body_parts.append(
            f"--{boundary}\r\nContent-Type: application/http\r\nContent-ID: <{i}>\r\n\r\n"
            f"GET /calendar/v3/calendars/primary/events HTTP/1.1\r\n\r\n"
        )
    response = google.api(google.access(ADA)).post(
        "batch/calendar/v3",
        content=("".join(body_parts) + f"--{boundary}--\r\n").encode(),
        headers={"Content-Type": f"multipart/mixed; boundary={boundary}"},
    )
    assert response.status_code == 400


def test_raw_batch_with_google_paths_and_outer_authorization(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    body = (
        "--b1\r\nContent-Type: application/http\r\nContent-ID: <item1>\r\n\r\n"
        "GET /calendar/v3/calendars/primary/events?maxResults=1 HTTP/1.1\r\n\r\n"
        "--b1\r\nContent-Type: application/http\r\nContent-ID: <item2>\r\n\r\n"
        "GET https://www.googleapis.com/calendar/v3/users/me/calendarList HTTP/1.1\r\n\r\n"
        "--b1--\r\n"
    )
    response = api.post(
        "batch/calendar/v3",
        content=body.encode(),
        headers={"Content-Type": "multipart/mixed; boundary=b1"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(
        "multipart/mixed; boundary=batch_"
    )
    text = response.text
    assert "Content-ID: <response-item1>" in text
    assert "Content-ID: <response-item2>" in text
    assert text.count("HTTP/1.1 200 OK") == 2
    assert '"kind":"calendar#events"' in text
    assert '"kind":"calendar#calendarList"' in text
