"""Outlook calendar fidelity over plain httpx: events, etags, If-Match, calendarView, instances, recurrence, time zones."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.sandbox.microsoft.conftest import Ms

EMAIL = "ada@contoso.example"
EXT_ID = "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name CrmId"
UTC7 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}$")


def _event(
    subject: str = "Demo",
    start: str = "2030-01-07T09:00:00",
    end: str = "2030-01-07T10:00:00",
    zone: str = "Pacific Standard Time",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "subject": subject,
        "start": {"dateTime": start, "timeZone": zone},
        "end": {"dateTime": end, "timeZone": zone},
        **extra,
    }


async def test_create_get_update_delete_with_etags(ms: Ms) -> None:
    async with ms.user_client(EMAIL) as graph:
        created = await graph.post(
            "/me/events", json=_event(body={"contentType": "text", "content": "Hi"})
        )
        assert created.status_code == 201
        ev = created.json()
        assert ev["@odata.etag"] == f'W/"{ev["changeKey"]}"'
        assert ev["type"] == "singleInstance"
        assert ev["originalStartTimeZone"] == "Pacific Standard Time"
        assert ev["iCalUId"].startswith("040000008200E00074C5B7101A82E008")
        assert re.match(
            r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}Z$", ev["lastModifiedDateTime"]
        )
        assert ev["transactionId"] is None
        assert "originalStart" not in ev
        # create responses echo the request's zone (docs samples; UNVERIFIED -> decision)
        assert ev["start"] == {
            "dateTime": "2030-01-07T09:00:00.0000000",
            "timeZone": "Pacific Standard Time",
        }
        got = await graph.get(f"/me/events/{ev['id']}")
        assert got.status_code == 200
        # reads are UTC without Prefer
        assert got.json()["start"] == {
            "dateTime": "2030-01-07T17:00:00.0000000",
            "timeZone": "UTC",
        }
        assert got.json()["body"]["contentType"] == "html"
        patched = await graph.patch(
            f"/me/events/{ev['id']}",
            json={"subject": "Renamed"},
            headers={"If-Match": ev["@odata.etag"]},
        )
        assert patched.status_code == 200
        assert patched.json()["subject"] == "Renamed"
        assert patched.json()["changeKey"] != ev["changeKey"]
        stale = await graph.patch(
            f"/me/events/{ev['id']}",
            json={"subject": "Lost"},
            headers={"If-Match": ev["@odata.etag"]},
        )
        assert stale.status_code == 412
        assert stale.json()["error"]["code"] == "ErrorIrresolvableConflict"
        assert stale.json()["error"]["message"].startswith(
            "The send or update operation could not be performed"
        )
        stale_delete = await graph.delete(
            f"/me/events/{ev['id']}", headers={"If-Match": ev["@odata.etag"]}
        )
        assert stale_delete.status_code == 412
        wildcard = await graph.patch(
            f"/me/events/{ev['id']}", json={"subject": "Any"}, headers={"If-Match": "*"}
        )
        assert wildcard.status_code == 200
        deleted = await graph.delete(f"/me/events/{ev['id']}")
        assert deleted.status_code == 204
        assert deleted.content == b""
        gone = await graph.get(f"/me/events/{ev['id']}")
        assert gone.status_code == 404
        assert gone.json()["error"]["code"] == "ErrorItemNotFound"


async def test_prefer_outlook_timezone_converts_and_is_applied(ms: Ms) -> None:
    async with ms.user_client(EMAIL) as graph:
        ev = (
            await graph.post(
                "/me/events",
                json=_event(
                    zone="UTC", start="2030-07-01T12:00:00", end="2030-07-01T13:00:00"
                ),
            )
        ).json()
        response = await graph.get(
            f"/me/events/{ev['id']}",
            headers={"Prefer": 'outlook.timezone="W. Europe Standard Time"'},
        )
        assert (
            response.headers["preference-applied"]
            == 'outlook.timezone="W. Europe Standard Time"'
        )
        assert response.json()["start"] == {
            "dateTime": "2030-07-01T14:00:00.0000000",
            "timeZone": "W. Europe Standard Time",
        }
        iana = await graph.get(
            f"/me/events/{ev['id']}",
            headers={"Prefer": 'outlook.timezone="America/New_York"'},
        )
        assert iana.json()["start"]["dateTime"] == "2030-07-01T08:00:00.0000000"


async def test_windows_and_iana_zones_accepted_unknown_rejected(ms: Ms) -> None:
    async with ms.user_client(EMAIL) as graph:
        for zone in ("India Standard Time", "Europe/Berlin", "tzone://Microsoft/Utc"):
            assert (
                await graph.post("/me/events", json=_event(zone=zone))
            ).status_code == 201
        bad = await graph.post("/me/events", json=_event(zone="Mars/Olympus"))
        assert bad.status_code == 400
        assert bad.json()["error"]["code"] == "TimeZoneNotSupportedException"


async def test_all_day_requires_midnight_and_renders_midnight_in_any_zone(
    ms: Ms,
) -> None:
    async with ms.user_client(EMAIL) as graph:
        bad = await graph.post("/me/events", json=_event(isAllDay=True, zone="UTC"))
        assert bad.status_code == 400
        ok = await graph.post(
            "/me/events",
            json={
                "subject": "Offsite",
                "isAllDay": True,
                "start": {"dateTime": "2030-11-11", "timeZone": "UTC"},
                "end": {"dateTime": "2030-11-12", "timeZone": "UTC"},
            },
        )
        assert ok.status_code == 201
        got = await graph.get(
            f"/me/events/{ok.json()['id']}",
            headers={"Prefer": 'outlook.timezone="Tokyo Standard Time"'},
        )
        assert got.json()["start"] == {
            "dateTime": "2030-11-11T00:00:00.0000000",
            "timeZone": "Tokyo Standard Time",
        }
        assert got.json()["end"]["dateTime"] == "2030-11-12T00:00:00.0000000"
        assert got.json()["isAllDay"] is True


async def test_unknown_property_and_bad_json(ms: Ms) -> None:
    async with ms.user_client(EMAIL) as graph:
        unknown = await graph.post("/me/events", json=_event(foo=1))
        assert unknown.status_code == 400
        assert unknown.json()["error"]["code"] == "RequestBodyRead"
        bad = await graph.post(
            "/me/events", content=b"{nope", headers={"Content-Type": "application/json"}
        )
        assert bad.status_code == 400
        assert bad.json()["error"]["code"] == "BadRequest"


async def test_transaction_id_is_immutable_but_not_a_lock(ms: Ms) -> None:
    async with ms.user_client(EMAIL) as graph:
        first = (
            await graph.post("/me/events", json=_event(transactionId="tx-1"))
        ).json()
        second = (
            await graph.post("/me/events", json=_event(transactionId="tx-1"))
        ).json()
        assert first["id"] != second["id"]
        assert first["transactionId"] == "tx-1"
        changed = await graph.patch(
            f"/me/events/{first['id']}", json={"transactionId": "tx-2"}
        )
        assert changed.status_code == 400
        assert changed.json()["error"] == {
            **changed.json()["error"],
            "code": "ErrorInvalidRequest",
            "message": "Your request can't be completed. ClientId/TransactionId is immutable and cannot be updated.",
        }


async def test_single_value_extended_properties_expand_and_filter(ms: Ms) -> None:
    async with ms.user_client(EMAIL) as graph:
        tagged = (
            await graph.post(
                "/me/events",
                json=_event(
                    singleValueExtendedProperties=[{"id": EXT_ID, "value": "Deal-42"}]
                ),
            )
        ).json()
        await graph.post("/me/events", json=_event(subject="Other"))
        assert "singleValueExtendedProperties" not in tagged
        expanded = await graph.get(
            f"/me/events/{tagged['id']}",
            params={
                "$expand": f"singleValueExtendedProperties($filter=id eq '{EXT_ID}')"
            },
        )
        assert expanded.json()["singleValueExtendedProperties"] == [
            {"id": EXT_ID, "value": "Deal-42"}
        ]
        # value matching is case-insensitive
        found = await graph.get(
            "/me/events",
            params={
                "$filter": f"singleValueExtendedProperties/Any(ep: ep/id eq '{EXT_ID}' and ep/value eq 'deal-42')"
            },
        )
        assert [e["id"] for e in found.json()["value"]] == [tagged["id"]]
        # the Name part of the id is case-sensitive
        wrong_case = EXT_ID.replace("CrmId", "crmid")
        none = await graph.get(
            "/me/events",
            params={
                "$filter": f"singleValueExtendedProperties/Any(ep: ep/id eq '{wrong_case}' and ep/value eq 'Deal-42')"
            },
        )
        assert none.json()["value"] == []


async def test_events_paging_default_10_and_top(ms: Ms) -> None:
    async with ms.user_client(EMAIL) as graph:
        for i in range(12):
            await graph.post("/me/events", json=_event(subject=f"E{i}"))
        first = (await graph.get("/me/events")).json()
        assert len(first["value"]) == 10
        assert "$skip=10" in first["@odata.nextLink"]
        nxt = (await graph.get(first["@odata.nextLink"])).json()
        assert len(nxt["value"]) == 2
        assert "@odata.nextLink" not in nxt
        top = (
            await graph.get("/me/events", params={"$top": "5", "$select": "subject"})
        ).json()
        assert len(top["value"]) == 5
        assert set(top["value"][0]) == {"@odata.etag", "id", "subject"}


async def test_calendar_view_requires_window(ms: Ms) -> None:
    async with ms.user_client(EMAIL) as graph:
        response = await graph.get("/me/calendarView")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "ErrorInvalidParameter"
    assert response.json()["error"]["message"] == (
        "This request requires a time window specified by the query string parameters StartDateTime and EndDateTime."
    )


WEEKLY = {
    "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["Monday"]},
    "range": {"type": "numbered", "startDate": "2030-01-07", "numberOfOccurrences": 4},
}


async def test_recurring_series_expansion_exception_and_cancellation(ms: Ms) -> None:
    async with ms.user_client(EMAIL) as graph:
        master = (
            await graph.post(
                "/me/events",
                json=_event(recurrence=WEEKLY, zone="W. Europe Standard Time"),
            )
        ).json()
        assert master["type"] == "seriesMaster"
        # every pattern field filled, enums lower-cased
        assert master["recurrence"]["pattern"] == {
            "type": "weekly", "interval": 1, "month": 0, "dayOfMonth": 0,
            "daysOfWeek": ["monday"], "firstDayOfWeek": "sunday", "index": "first",
        }  # fmt: skip
        assert (
            master["recurrence"]["range"]["recurrenceTimeZone"]
            == "W. Europe Standard Time"
        )
        window = {
            "startDateTime": "2030-01-01T00:00:00Z",
            "endDateTime": "2030-02-28T00:00:00Z",
        }
        listed = (await graph.get("/me/events")).json()["value"]
        assert [e["type"] for e in listed] == ["seriesMaster"]
        view = (await graph.get("/me/calendarView", params=window)).json()["value"]
        assert [e["type"] for e in view] == ["occurrence"] * 4
        assert all(
            e["seriesMasterId"] == master["id"] and e["id"] != master["id"]
            for e in view
        )
        assert view[0]["originalStart"] == "2030-01-07T08:00:00.0000000Z"
        assert len({e["iCalUId"] for e in view}) == 4
        # move the second occurrence -> exception
        moved = await graph.patch(
            f"/me/events/{view[1]['id']}",
            json={
                "subject": "Moved",
                "start": {
                    "dateTime": "2030-01-14T11:00:00",
                    "timeZone": "W. Europe Standard Time",
                },
                "end": {
                    "dateTime": "2030-01-14T12:00:00",
                    "timeZone": "W. Europe Standard Time",
                },
            },
        )
        assert moved.status_code == 200
        assert moved.json()["type"] == "exception"
        # cancel the third occurrence
        assert (await graph.delete(f"/me/events/{view[2]['id']}")).status_code == 204
        instances = (
            await graph.get(f"/me/events/{master['id']}/instances", params=window)
        ).json()["value"]
        assert [(e["type"], e["subject"]) for e in instances] == [
            ("occurrence", "Demo"),
            ("exception", "Moved"),
            ("occurrence", "Demo"),
        ]
        assert (await graph.get(f"/me/events/{view[2]['id']}")).status_code == 404
        cancelled = (
            await graph.get(
                f"/me/events/{master['id']}", params={"$select": "cancelledOccurrences"}
            )
        ).json()
        assert len(cancelled["cancelledOccurrences"]) == 1
        no_window = await graph.get(f"/me/events/{master['id']}/instances")
        assert no_window.status_code == 400


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ({"type": "daily", "interval": 2}, ["2030-01-07", "2030-01-09", "2030-01-11"]),
        (
            {"type": "absoluteMonthly", "interval": 1, "dayOfMonth": 31},
            ["2030-01-31", "2030-02-28", "2030-03-31"],
        ),
        (
            {
                "type": "relativeMonthly",
                "interval": 1,
                "daysOfWeek": ["friday"],
                "index": "last",
            },
            ["2030-01-25", "2030-02-22", "2030-03-29"],
        ),
        (
            {"type": "absoluteYearly", "interval": 1, "dayOfMonth": 7, "month": 2},
            ["2030-02-07", "2031-02-07", "2032-02-07"],
        ),
        (
            {
                "type": "relativeYearly",
                "interval": 1,
                "daysOfWeek": ["monday"],
                "month": 9,
                "index": "first",
            },
            ["2030-09-02", "2031-09-01", "2032-09-06"],
        ),
    ],
)
async def test_pattern_types(
    ms: Ms, pattern: dict[str, Any], expected: list[str]
) -> None:
    recurrence = {
        "pattern": pattern,
        "range": {
            "type": "numbered",
            "startDate": "2030-01-07",
            "numberOfOccurrences": 3,
        },
    }
    async with ms.user_client(EMAIL) as graph:
        master = await graph.post(
            "/me/events", json=_event(zone="UTC", recurrence=recurrence)
        )
        assert master.status_code == 201, master.text
        view = (
            await graph.get(
                "/me/calendarView",
                params={
                    "startDateTime": "2029-12-01T00:00:00Z",
                    "endDateTime": "2033-01-01T00:00:00Z",
                },
            )
        ).json()
    assert [e["start"]["dateTime"][:10] for e in view["value"]] == expected


async def test_pattern_missing_required_property_is_400(ms: Ms) -> None:
    async with ms.user_client(EMAIL) as graph:
        response = await graph.post(
            "/me/events",
            json=_event(
                recurrence={
                    "pattern": {"type": "weekly", "interval": 1},
                    "range": {"type": "noEnd", "startDate": "2030-01-07"},
                }
            ),
        )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "ErrorInvalidRequest"


async def test_users_path_and_other_mailbox(ms: Ms) -> None:
    ms.add_user("bob@contoso.example")
    async with ms.user_client(EMAIL) as graph:
        mine = await graph.get(f"/users/{EMAIL}/events")
        assert mine.status_code == 200
        other = await graph.get("/users/bob@contoso.example/events")
        assert other.status_code == 403
        assert other.json()["error"]["code"] == "ErrorAccessDenied"
        unknown = await graph.get("/me/nothing")
        assert unknown.status_code == 400
        assert (
            unknown.json()["error"]["message"]
            == "Resource not found for the segment 'nothing'."
        )
        readonly = await graph.get("/me/calendars")
        assert readonly.json()["value"][0]["isDefaultCalendar"] is True


async def test_write_needs_readwrite_scope(ms: Ms) -> None:
    async with ms.user_client(EMAIL, ["Calendars.Read"]) as graph:
        assert (await graph.get("/me/events")).status_code == 200
        denied = await graph.post("/me/events", json=_event())
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "ErrorAccessDenied"


async def test_out_of_band_touch_changes_the_change_key(ms: Ms) -> None:
    async with ms.user_client(EMAIL) as graph:
        ev = (await graph.post("/me/events", json=_event())).json()
        touched = ms.control("POST", f"/users/{EMAIL}/events/{ev['id']}/touch")
        assert touched.status_code == 200
        stale = await graph.patch(
            f"/me/events/{ev['id']}",
            json={"subject": "x"},
            headers={"If-Match": ev["@odata.etag"]},
        )
    assert stale.status_code == 412
