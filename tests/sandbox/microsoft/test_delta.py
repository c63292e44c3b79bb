"""calendarView delta fidelity: paging, deltaLink rounds, @removed (also out of window), series grouping, 410."""

from __future__ import annotations

from typing import Any

import httpx

from tests.sandbox.microsoft.conftest import Ms

EMAIL = "ada@contoso.example"
WINDOW = {
    "startDateTime": "2030-01-01T00:00:00Z",
    "endDateTime": "2030-02-01T00:00:00Z",
}


def _event(subject: str, day: int, month: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "subject": subject,
        "start": {
            "dateTime": f"2030-{month:02d}-{day:02d}T09:00:00",
            "timeZone": "UTC",
        },
        "end": {"dateTime": f"2030-{month:02d}-{day:02d}T10:00:00", "timeZone": "UTC"},
        **extra,
    }


async def _round(
    graph: httpx.AsyncClient,
    first_url: str,
    params: dict[str, str] | None = None,
    **headers: str,
) -> tuple[list[dict[str, Any]], str, list[int]]:
    """Follow nextLinks to the deltaLink; return (items, deltaLink, page sizes)."""
    response = await graph.get(first_url, params=params, headers=headers)
    assert response.status_code == 200, response.text
    assert "odata.track-changes" in response.headers["preference-applied"]
    items: list[dict[str, Any]] = []
    sizes: list[int] = []
    body = response.json()
    while True:
        items.extend(body["value"])
        sizes.append(len(body["value"]))
        if "@odata.deltaLink" in body:
            return items, body["@odata.deltaLink"], sizes
        assert "$skiptoken=" in body["@odata.nextLink"]
        body = (await graph.get(body["@odata.nextLink"], headers=headers)).json()


async def test_initial_round_pages_and_follow_up_changes(ms: Ms) -> None:
    async with ms.user_client(EMAIL) as graph:
        ids = [
            (await graph.post("/me/events", json=_event(f"E{d}", d))).json()["id"]
            for d in range(1, 6)
        ]
        items, delta_link, sizes = await _round(
            graph, "/me/calendarView/delta", WINDOW, Prefer="odata.maxpagesize=2"
        )
        assert sizes == [2, 2, 1]
        assert {i["id"] for i in items} == set(ids)
        assert "$deltatoken=" in delta_link
        # nothing changed -> empty round
        empty, delta_link, _ = await _round(graph, delta_link)
        assert empty == []
        # update one, delete one, add one, move one out of the window
        await graph.patch(f"/me/events/{ids[0]}", json={"subject": "Changed"})
        await graph.delete(f"/me/events/{ids[1]}")
        added = (await graph.post("/me/events", json=_event("New", 20))).json()["id"]
        await graph.patch(
            f"/me/events/{ids[2]}",
            json={
                "start": {"dateTime": "2030-03-01T09:00:00", "timeZone": "UTC"},
                "end": {"dateTime": "2030-03-01T10:00:00", "timeZone": "UTC"},
            },
        )
        changes, delta_link, _ = await _round(graph, delta_link)
        by_id = {c["id"]: c for c in changes}
        assert by_id[ids[0]]["subject"] == "Changed"
        assert by_id[added]["subject"] == "New"
        assert by_id[ids[1]]["@removed"] == {"reason": "deleted"}
        assert by_id[ids[2]]["@removed"] == {"reason": "deleted"}
        # a change entirely outside the window also shows up as @removed
        outside = (
            await graph.post("/me/events", json=_event("Far away", 5, month=6))
        ).json()["id"]
        far, _, _ = await _round(graph, delta_link)
        assert far == [
            {
                "@odata.type": "#microsoft.graph.event",
                "id": outside,
                "@removed": {"reason": "deleted"},
            }
        ]


async def test_series_occurrences_are_not_split_and_cancelled_occurrence_is_silent(
    ms: Ms,
) -> None:
    recurrence = {
        "pattern": {"type": "daily", "interval": 1},
        "range": {
            "type": "numbered",
            "startDate": "2030-01-10",
            "numberOfOccurrences": 3,
        },
    }
    async with ms.user_client(EMAIL) as graph:
        await graph.post("/me/events", json=_event("Single", 2))
        await graph.post("/me/events", json=_event("Daily", 10, recurrence=recurrence))
        items, delta_link, sizes = await _round(
            graph, "/me/calendarView/delta", WINDOW, Prefer="odata.maxpagesize=2"
        )
        # page 1: the single; page 2: all three occurrences together (exceeds 2)
        assert sizes == [1, 3]
        occurrence = next(i for i in items if i["type"] == "occurrence")
        await graph.delete(f"/me/events/{occurrence['id']}")
        changes, _, _ = await _round(graph, delta_link)
        assert all(c["id"] != occurrence["id"] for c in changes)


async def test_delta_rejects_select_and_needs_a_window(ms: Ms) -> None:
    async with ms.user_client(EMAIL) as graph:
        selected = await graph.get(
            "/me/calendarView/delta", params={**WINDOW, "$select": "subject"}
        )
        assert selected.status_code == 400
        no_window = await graph.get("/me/calendarView/delta")
        assert no_window.status_code == 400
        assert no_window.json()["error"]["code"] == "ErrorInvalidParameter"


async def test_expired_delta_token_is_410_sync_state_not_found(ms: Ms) -> None:
    async with ms.user_client(EMAIL) as graph:
        for d in range(1, 4):
            await graph.post("/me/events", json=_event(f"E{d}", d))
        first = (
            await graph.get(
                "/me/calendarView/delta",
                params=WINDOW,
                headers={"Prefer": "odata.maxpagesize=1"},
            )
        ).json()
        items, delta_link, _ = await _round(graph, "/me/calendarView/delta", WINDOW)
        assert len(items) == 3
        assert (
            ms.control("POST", "/delta/expire", {"email": EMAIL}).json()["expired"] >= 1
        )
        gone = await graph.get(delta_link)
        assert gone.status_code == 410
        assert gone.json()["error"]["code"] == "SyncStateNotFound"
        # "a Location header containing a request URL with an empty $deltaToken
        # (same as the initial query)": the window is part of it, so following
        # it starts a fresh initial round.
        location = gone.headers["location"]
        assert location.endswith(
            "/me/calendarView/delta?startDateTime=2030-01-01T00%3A00%3A00Z"
            "&endDateTime=2030-02-01T00%3A00%3A00Z&$deltatoken="
        )
        restarted, _, _ = await _round(graph, location)
        assert len(restarted) == 3
        # an earlier round's nextLink is stale too
        stale = await graph.get(first["@odata.nextLink"])
        assert stale.status_code == 410
        garbage = await graph.get(
            "/me/calendarView/delta", params={"$deltatoken": "not-a-token"}
        )
        assert garbage.status_code == 410
        # a fresh initial round works again
        again, _, _ = await _round(graph, "/me/calendarView/delta", WINDOW)
        assert len(again) == 3


async def test_delta_token_age_limit(ms: Ms) -> None:
    ms.control("PATCH", "/config", {"delta_token_max_age_s": 3600})
    async with ms.user_client(EMAIL) as graph:
        _, delta_link, _ = await _round(graph, "/me/calendarView/delta", WINDOW)
        ms.control("POST", "/clock", {"advance_s": 3601})
        graph.headers["Authorization"] = f"Bearer {ms.token(EMAIL)}"
        assert (await graph.get(delta_link)).status_code == 410


async def test_delta_of_one_calendar_lists_only_it_and_keeps_its_path(ms: Ms) -> None:
    """``/me/calendars/{id}/calendarView/delta`` (msgraph-sdk's
    ``calendars.by_calendar_id.calendar_view.delta``): that calendar's events
    only, and every next/delta link stays on that calendar."""
    async with ms.user_client(EMAIL) as graph:
        other = (await graph.post("/me/calendars", json={"name": "Projects"})).json()
        in_default = (await graph.post("/me/events", json=_event("Default", 2))).json()
        in_other = (
            await graph.post(
                f"/me/calendars/{other['id']}/events", json=_event("Projects", 3)
            )
        ).json()
        path = f"/me/calendars/{other['id']}/calendarView/delta"
        items, delta_link, _ = await _round(
            graph, path, WINDOW, Prefer="odata.maxpagesize=1"
        )
        assert [i["id"] for i in items] == [in_other["id"]]
        assert "/calendars/" in delta_link
        await graph.patch(f"/me/events/{in_default['id']}", json={"subject": "X"})
        await graph.patch(f"/me/events/{in_other['id']}", json={"subject": "Y"})
        changes, _, _ = await _round(graph, delta_link)
        assert [(c["id"], c["subject"]) for c in changes] == [(in_other["id"], "Y")]
        # the default calendar's own feed does not list the other calendar
        mine, _, _ = await _round(graph, "/me/calendar/calendarView/delta", WINDOW)
        assert [i["id"] for i in mine] == [in_default["id"]]
        unknown = await graph.get(
            "/me/calendars/nope/calendarView/delta", params=WINDOW
        )
        assert unknown.status_code == 404
