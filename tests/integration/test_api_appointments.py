"""Appointments API on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

TIMED = {
    "title": "Quarterly review",
    "start": "2026-05-04T10:00:00",
    "end": "2026-05-04T11:30:00",
    "timezone": "Europe/Berlin",
    "location": "Room 1",
    "attendees": [{"email": "Dana@Example.com", "name": "Dana"}],
}


async def test_create_get_and_list(client, tenants):
    created = await client.post(
        "/api/appointments", json=TIMED, headers=tenants.alice.headers
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert created.headers["ETag"] == '"1"'
    assert created.headers["Location"] == f"/api/appointments/{body['id']}"
    # wall-clock input in Europe/Berlin (CEST, +02:00) is stored as that instant
    assert body["start"] == "2026-05-04T10:00:00+02:00"
    assert body["end"] == "2026-05-04T11:30:00+02:00"
    assert body["attendees"] == [
        {"email": "dana@example.com", "name": "Dana", "response_status": "needsAction"}
    ]
    assert body["owner_id"] == str(tenants.alice.ctx.user_id)

    got = await client.get(
        f"/api/appointments/{body['id']}", headers=tenants.amy.headers
    )
    assert got.status_code == 200
    assert got.json()["title"] == "Quarterly review"

    listed = await client.get("/api/appointments", headers=tenants.amy.headers)
    assert [a["id"] for a in listed.json()["items"]] == [body["id"]]
    assert listed.json()["total"] == 1


async def test_all_day_has_exclusive_end(client, tenants):
    resp = await client.post(
        "/api/appointments",
        json={
            "title": "Fair",
            "all_day": True,
            "start_date": "2026-06-01",
            "timezone": "Asia/Tokyo",
        },
        headers=tenants.alice.headers,
    )
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert (body["start_date"], body["end_date"]) == ("2026-06-01", "2026-06-02")
    assert body["start"] == "2026-06-01T00:00:00+09:00"


async def test_range_filter_and_pagination(client, tenants):
    for day in range(1, 8):
        r = await client.post(
            "/api/appointments",
            json={
                **TIMED,
                "title": f"day {day}",
                "start": f"2026-05-0{day}T09:00:00Z",
                "end": f"2026-05-0{day}T10:00:00Z",
            },
            headers=tenants.alice.headers,
        )
        assert r.status_code == 201
    resp = await client.get(
        "/api/appointments",
        params={
            "start": "2026-05-02T00:00:00Z",
            "end": "2026-05-05T00:00:00Z",
            "limit": 2,
        },
        headers=tenants.alice.headers,
    )
    page = resp.json()
    assert page["total"] == 3
    assert [a["title"] for a in page["items"]] == ["day 2", "day 3"]
    resp = await client.get(
        "/api/appointments",
        params={
            "start": "2026-05-02T00:00:00Z",
            "end": "2026-05-05T00:00:00Z",
            "limit": 2,
            "offset": 2,
        },
        headers=tenants.alice.headers,
    )
    assert [a["title"] for a in resp.json()["items"]] == ["day 4"]


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"end": "2026-05-04T09:00:00"}, "The end must be after the start."),
        ({"timezone": "Mars/Olympus"}, "Unknown time zone 'Mars/Olympus'"),
        ({"title": ""}, "String should have at least 1 character"),
        ({"recurrence_rule": "FREQ=SOMETIMES"}, "FREQ=DAILY"),
        ({"colour": "red"}, "Extra inputs are not permitted"),
        ({"all_day": True}, "an all-day appointment needs start_date"),
    ],
)
async def test_invalid_input_is_422_and_writes_nothing(client, tenants, patch, message):
    resp = await client.post(
        "/api/appointments", json={**TIMED, **patch}, headers=tenants.alice.headers
    )
    assert resp.status_code == 422
    assert message in resp.text
    listed = await client.get("/api/appointments", headers=tenants.alice.headers)
    assert listed.json()["total"] == 0


async def test_recurrence_rule_is_normalized(client, tenants):
    resp = await client.post(
        "/api/appointments",
        json={**TIMED, "recurrence_rule": "RRULE:freq=weekly;byday=mo,we;count=10"},
        headers=tenants.alice.headers,
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["recurrence_rule"] == "FREQ=WEEKLY;BYDAY=MO,WE;COUNT=10"


async def test_update_bumps_version_and_if_match_detects_stale_writes(client, tenants):
    aid = (
        await client.post(
            "/api/appointments", json=TIMED, headers=tenants.alice.headers
        )
    ).json()["id"]
    first = await client.patch(
        f"/api/appointments/{aid}",
        json={"title": "Renamed"},
        headers={**tenants.alice.headers, "If-Match": '"1"'},
    )
    assert first.status_code == 200, first.text
    assert first.json()["version"] == 2
    assert first.headers["ETag"] == '"2"'
    stale = await client.patch(
        f"/api/appointments/{aid}",
        json={"title": "Lost update"},
        headers={**tenants.alice.headers, "If-Match": '"1"'},
    )
    assert stale.status_code == 409
    assert "reload" in stale.json()["detail"]
    assert (
        await client.get(f"/api/appointments/{aid}", headers=tenants.alice.headers)
    ).json()["title"] == "Renamed"


async def test_patch_switches_to_all_day(client, tenants):
    aid = (
        await client.post(
            "/api/appointments", json=TIMED, headers=tenants.alice.headers
        )
    ).json()["id"]
    resp = await client.patch(
        f"/api/appointments/{aid}",
        json={"all_day": True, "start_date": "2026-05-04"},
        headers=tenants.alice.headers,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["all_day"] is True
    assert resp.json()["end_date"] == "2026-05-05"


async def test_member_cannot_change_someone_elses_appointment(client, tenants):
    aid = (
        await client.post(
            "/api/appointments", json=TIMED, headers=tenants.alice.headers
        )
    ).json()["id"]
    resp = await client.put(
        f"/api/appointments/{aid}",
        json={**TIMED, "title": "Hijack"},
        headers=tenants.amy.headers,
    )
    assert resp.status_code == 403
    assert "owner" in resp.json()["detail"]
    assert (
        await client.delete(f"/api/appointments/{aid}", headers=tenants.amy.headers)
    ).status_code == 403
    # an admin may change a member's appointment
    own = (
        await client.post("/api/appointments", json=TIMED, headers=tenants.amy.headers)
    ).json()["id"]
    assert (
        await client.patch(
            f"/api/appointments/{own}",
            json={"title": "Fixed by admin"},
            headers=tenants.alice.headers,
        )
    ).status_code == 200


async def test_delete(client, tenants):
    aid = (
        await client.post(
            "/api/appointments", json=TIMED, headers=tenants.alice.headers
        )
    ).json()["id"]
    assert (
        await client.delete(f"/api/appointments/{aid}", headers=tenants.alice.headers)
    ).status_code == 204
    assert (
        await client.get(f"/api/appointments/{aid}", headers=tenants.alice.headers)
    ).status_code == 404


async def test_unauthenticated_and_bad_tokens_are_401(client, tenants):
    assert (await client.get("/api/appointments")).status_code == 401
    bad = await client.get(
        "/api/appointments", headers={"Authorization": "Bearer crm_nope"}
    )
    assert bad.status_code == 401
    assert bad.headers["WWW-Authenticate"].startswith("Bearer")


async def test_revoked_token_stops_working(client, tenants):
    new = await client.post(
        "/api/tokens", json={"name": "script"}, headers=tenants.alice.headers
    )
    assert new.status_code == 201
    token = new.json()["token"]
    assert token.startswith("crm_")
    headers = {"Authorization": f"Bearer {token}"}
    assert (await client.get("/api/me", headers=headers)).json()[
        "email"
    ] == "alice@a.test"
    listed = await client.get("/api/tokens", headers=headers)
    assert "token" not in listed.json()[0]
    assert (
        await client.delete(f"/api/tokens/{new.json()['id']}", headers=headers)
    ).status_code == 204
    assert (await client.get("/api/me", headers=headers)).status_code == 401
