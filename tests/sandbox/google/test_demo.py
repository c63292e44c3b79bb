"""seed_demo_google: the demo calendar and mailbox, seen through the API."""

from __future__ import annotations

from crmflow.sandbox.google.demo import seed_demo_google
from tests.sandbox.conftest import GoogleSandbox

DEMO = "demo@crmflow.example"


def test_demo_calendar(google: GoogleSandbox):
    demo = seed_demo_google(google.state, DEMO)
    api = google.api(google.access(DEMO))
    events = "calendar/v3/calendars/primary/events"
    series = api.get(f"{events}/{demo.standup_id}").json()
    assert series["summary"] == "Team Standup"
    assert series["recurrence"] == ["RRULE:FREQ=WEEKLY;BYDAY=MO"]
    assert series["start"]["timeZone"] == "Europe/Zurich"
    moved = api.get(f"{events}/{demo.moved_instance_id}").json()
    assert moved["recurringEventId"] == demo.standup_id
    assert moved["start"]["dateTime"][11:16] == "10:00"
    assert moved["originalStartTime"]["dateTime"][11:16] == "09:30"
    assert (
        api.get(f"{events}/{demo.cancelled_instance_id}").json()["status"]
        == "cancelled"
    )
    instances = api.get(
        f"{events}/{demo.standup_id}/instances", params={"maxResults": 10}
    ).json()["items"]
    ids = [i["id"] for i in instances]
    assert demo.moved_instance_id in ids
    assert demo.cancelled_instance_id not in ids
    offsite = api.get(f"{events}/{demo.offsite_id}").json()
    assert set(offsite["start"]) == {"date"}
    assert offsite["end"]["date"] > offsite["start"]["date"]
    zones = {
        api.get(f"{events}/{i}").json()["start"]["timeZone"]
        for i in demo.client_call_ids
    }
    assert zones == {"America/New_York", "Asia/Tokyo"}
    assert all(
        "Client Call" in api.get(f"{events}/{i}").json()["summary"]
        for i in demo.client_call_ids
    )


def test_demo_mailbox(google: GoogleSandbox):
    demo = seed_demo_google(google.state, DEMO)
    api = google.api(google.access(DEMO))
    threads = api.get("gmail/v1/users/me/threads").json()["threads"]
    assert len(threads) == 3
    assert len(demo.thread_ids) == 3
    proposal = api.get(
        f"gmail/v1/users/me/threads/{demo.thread_ids[0]}", params={"format": "metadata"}
    ).json()
    assert len(proposal["messages"]) == 3
    assert "SENT" in proposal["messages"][1]["labelIds"]
    with_file = api.get(
        "gmail/v1/users/me/messages", params={"q": "has:attachment filename:pdf"}
    ).json()
    assert with_file["resultSizeEstimate"] == 1


def test_demo_seed_is_idempotent(google: GoogleSandbox):
    first = seed_demo_google(google.state, DEMO)
    second = seed_demo_google(google.state, DEMO)
    assert first == second
    api = google.api(google.access(DEMO))
    assert len(api.get("gmail/v1/users/me/messages").json()["messages"]) == 5
