"""Appointments API on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from crmflow.store import models

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
        # 30 February: refused at once (dateutil would look until 9999)
        ({"recurrence_rule": "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30"}, "never occur"),
        ({"recurrence_rule": "FREQ=DAILY;UNTIL=20200101T000000Z"}, "within ten"),
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


async def _post(client, tenants, **fields):
    response = await client.post(
        "/api/appointments",
        json={**TIMED, "attendees": [], **fields},
        headers=tenants.alice.headers,
    )
    assert response.status_code == 201, response.text
    return response.json()


async def _series_end(admin_db, appointment_id):
    async with admin_db.admin() as session:
        row = await session.get(models.Appointment, uuid.UUID(appointment_id))
        assert row is not None
        return row.series_end_at


async def test_a_range_lists_the_series_that_reach_into_it_with_their_occurrences(
    client, tenants, admin_db
):
    monday = {"start": "2026-03-02T09:00:00", "end": "2026-03-02T09:30:00"}
    weekly = await _post(
        client, tenants, title="Weekly 1:1", recurrence_rule="FREQ=WEEKLY", **monday
    )
    ended = await _post(
        client,
        tenants,
        title="Ended",
        recurrence_rule="FREQ=DAILY;UNTIL=20260304T235959Z",
        **monday,
    )
    # monthly on the 20th: none of its occurrences falls in the range
    await _post(
        client,
        tenants,
        title="Monthly",
        recurrence_rule="FREQ=MONTHLY",
        start="2026-01-20T09:00:00",
        end="2026-01-20T10:00:00",
    )
    pitch = await _post(
        client,
        tenants,
        title="Pitch",
        start="2026-05-05T10:00:00",
        end="2026-05-05T11:00:00",
    )
    two_weeks = {"start": "2026-05-04T00:00:00Z", "end": "2026-05-18T00:00:00Z"}

    async def listed(**params):
        response = await client.get(
            "/api/appointments",
            params={**two_weeks, **params},
            headers=tenants.amy.headers,
        )
        assert response.status_code == 200, response.text
        return response.json()

    page = await listed()
    assert page["total"] == 2
    # ordered by the first occurrence in the range: Monday 4 May 09:00 Berlin
    # (07:00 UTC) before the pitch on Tuesday
    assert [a["title"] for a in page["items"]] == ["Weekly 1:1", "Pitch"]
    series, single = page["items"]
    assert series["start"] == "2026-03-02T09:00:00+01:00"  # the series itself
    assert series["occurrences"] == [
        {
            "start": f"2026-05-{day}T09:00:00+02:00",
            "end": f"2026-05-{day}T09:30:00+02:00",
            "start_date": None,
            "end_date": None,
        }
        for day in ("04", "11")
    ]
    assert single["occurrences"] is None
    second = await listed(limit=1, offset=1)
    assert ([a["id"] for a in second["items"]], second["total"]) == ([pitch["id"]], 2)
    # without a start the old listing: every appointment begun before the end,
    # series by their first occurrence
    response = await client.get(
        "/api/appointments",
        params={"end": two_weeks["end"]},
        headers=tenants.amy.headers,
    )
    assert response.json()["total"] == 4
    assert {a["occurrences"] is None for a in response.json()["items"]} == {True}

    # what lets the query pass over an ended series without expanding it
    # (by its UNTIL, without expanding it: late by at most a day, never early)
    ended_by = await _series_end(admin_db, ended["id"])
    assert ended_by is not None
    last = dt.datetime(2026, 3, 4, 8, 30, tzinfo=dt.UTC)
    assert last <= ended_by <= last + dt.timedelta(days=2)
    assert await _series_end(admin_db, weekly["id"]) is None
    assert await _series_end(admin_db, pitch["id"]) == dt.datetime(
        2026, 5, 5, 9, tzinfo=dt.UTC
    )
    # a new rule works it out again: the ended series now runs daily
    changed = await client.put(
        f"/api/appointments/{ended['id']}",
        json={
            **TIMED,
            "attendees": [],
            "title": "Ended",
            **monday,
            "recurrence_rule": "FREQ=DAILY",
        },
        headers=tenants.alice.headers,
    )
    assert changed.status_code == 200, changed.text
    assert await _series_end(admin_db, ended["id"]) is None
    page = await listed()
    # both series meet first on 4 May at 09:00 (then the id decides)
    titles = [a["title"] for a in page["items"]]
    assert (set(titles[:2]), titles[2:]) == ({"Ended", "Weekly 1:1"}, ["Pitch"])
    [daily] = [a for a in page["items"] if a["title"] == "Ended"]
    assert len(daily["occurrences"]) == 14


async def test_a_range_with_its_end_before_its_start_is_refused(client, tenants):
    response = await client.get(
        "/api/appointments",
        params={"start": "2026-05-04T00:00:00Z", "end": "2026-05-04T00:00:00Z"},
        headers=tenants.alice.headers,
    )
    assert response.status_code == 422, response.text
    assert "end must be after its start" in response.text


async def test_a_series_nobody_can_expand_is_listed_by_its_first_occurrence(
    client, tenants, admin_db
):
    odd = await _post(
        client,
        tenants,
        title="Odd",
        start="2026-05-05T10:00:00",
        end="2026-05-05T11:00:00",
    )
    # as a calendar may send it: a rule that cannot be expanded
    async with admin_db.admin() as session:
        row = await session.get(models.Appointment, uuid.UUID(odd["id"]))
        assert row is not None
        row.recurrence = ["RRULE:FREQ=SOMETIMES"]
        row.series_end_at = None

    async def titles(start, end):
        response = await client.get(
            "/api/appointments",
            params={"start": start, "end": end},
            headers=tenants.alice.headers,
        )
        assert response.status_code == 200, response.text
        return [(a["title"], a["occurrences"]) for a in response.json()["items"]]

    assert await titles("2026-05-05T00:00:00Z", "2026-05-06T00:00:00Z") == [
        ("Odd", None)
    ]
    assert await titles("2026-05-12T00:00:00Z", "2026-05-13T00:00:00Z") == []
