"""Graph: odd input gets Graph's 4xx, rejected writes change nothing (review findings).

Each test pins one bug found in review: date values at the edge of what can be
represented (500s, unpadded years), PATCHes that were half applied although
answered 400, message properties that were coerced or crashed, a missing
Exchange rule (overlapping occurrences), a quadratic delta page, a
``notificationUrl`` PATCH that was accepted and ignored.
"""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

import pytest

from crmflow.sandbox.microsoft import events as events_module
from tests.sandbox.microsoft.conftest import Ms, Receiver

EMAIL = "ada@contoso.example"
WINDOW = {
    "startDateTime": "2030-01-01T00:00:00Z",
    "endDateTime": "2030-02-01T00:00:00Z",
}


def _event(start: str, end: str, zone: str = "UTC", **extra: Any) -> dict[str, Any]:
    return {
        "subject": "E",
        "start": {"dateTime": start, "timeZone": zone},
        "end": {"dateTime": end, "timeZone": zone},
        **extra,
    }


def _daily(start_date: str, **range_extra: Any) -> dict[str, Any]:
    return {
        "pattern": {"type": "daily", "interval": 1},
        "range": {"type": "noEnd", "startDate": start_date, **range_extra},
    }


async def test_years_before_1000_render_with_four_digits(ms: Ms) -> None:
    async with ms.user_client(EMAIL) as graph:
        created = await graph.post(
            "/me/events", json=_event("0999-05-01T09:00:00", "0999-05-01T10:00:00")
        )
        assert created.status_code == 201, created.text
        # strftime("%Y") wrote "999-05-01T09:00:00.0000000"
        assert created.json()["start"]["dateTime"] == "0999-05-01T09:00:00.0000000"
        listed = (await graph.get("/me/events")).json()["value"]
        assert listed[0]["end"]["dateTime"] == "0999-05-01T10:00:00.0000000"


@pytest.mark.parametrize(
    ("start", "end", "zone"),
    [
        ("0001-01-01T00:00:00+14:00", "0001-01-01T01:00:00+14:00", "UTC"),
        ("0001-01-01T00:00:00", "0001-01-01T01:00:00", "Pacific Standard Time"),
        ("9999-12-31T23:00:00", "9999-12-31T23:30:00", "Tokyo Standard Time"),
    ],
)
async def test_unrepresentable_event_times_are_400(
    ms: Ms, start: str, end: str, zone: str
) -> None:
    async with ms.user_client(EMAIL) as graph:
        response = await graph.post("/me/events", json=_event(start, end, zone))
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "RequestBodyRead"
        assert (await graph.get("/me/events")).json()["value"] == []


async def test_extreme_windows_are_clamped_not_500(ms: Ms) -> None:
    async with ms.user_client(EMAIL) as graph:
        master = (
            await graph.post(
                "/me/events",
                json=_event(
                    "2030-01-10T09:00:00",
                    "2030-01-10T10:00:00",
                    recurrence={
                        "pattern": {"type": "daily", "interval": 1},
                        "range": {
                            "type": "numbered",
                            "startDate": "2030-01-10",
                            "numberOfOccurrences": 3,
                        },
                    },
                ),
            )
        ).json()
        for window in (
            {
                "startDateTime": "0001-01-01T00:00:00Z",
                "endDateTime": "9999-12-31T23:59:59Z",
            },
            {
                "startDateTime": "0001-01-01T00:00:00+14:00",
                "endDateTime": "9999-12-31T23:59:59-14:00",
            },
        ):
            for path in (
                "/me/calendarView",
                "/me/calendarView/delta",
                f"/me/events/{master['id']}/instances",
            ):
                response = await graph.get(path, params=window)
                assert response.status_code == 200, (path, window, response.text)
                assert len(response.json()["value"]) == 3


async def test_overlapping_occurrences_are_error_occurrence_time_span_too_big(
    ms: Ms,
) -> None:
    # EWS ResponseCode docs: "the time allotment for a given occurrence
    # overlaps with another occurrence of the same recurring item".
    async with ms.user_client(EMAIL) as graph:
        overlapping = await graph.post(
            "/me/events",
            json=_event(
                "2030-01-10T09:00:00",
                "2030-01-11T10:00:00",
                recurrence=_daily("2030-01-10"),
            ),
        )
        assert overlapping.status_code == 400
        assert overlapping.json()["error"]["code"] == "ErrorOccurrenceTimeSpanTooBig"
        weekly = {
            "pattern": {
                "type": "weekly",
                "interval": 1,
                "daysOfWeek": ["monday", "tuesday"],
                "firstDayOfWeek": "sunday",
            },
            "range": {"type": "noEnd", "startDate": "2030-01-07"},
        }
        two_days = await graph.post(
            "/me/events",
            json=_event(
                "2030-01-07T09:00:00", "2030-01-09T09:00:00", recurrence=weekly
            ),
        )
        assert two_days.status_code == 400
        # back to back is fine
        touching = await graph.post(
            "/me/events",
            json=_event(
                "2030-01-10T09:00:00",
                "2030-01-11T09:00:00",
                recurrence=_daily("2030-01-10"),
            ),
        )
        assert touching.status_code == 201, touching.text
        # a PATCH that makes occurrences overlap is refused and changes nothing
        before = touching.json()
        longer = await graph.patch(
            f"/me/events/{before['id']}",
            json={"end": {"dateTime": "2030-01-11T12:00:00", "timeZone": "UTC"}},
        )
        assert longer.status_code == 400
        after = (await graph.get(f"/me/events/{before['id']}")).json()
        assert after["end"] == before["end"]
        assert after["changeKey"] == before["changeKey"]


async def test_rejected_event_patch_changes_nothing(ms: Ms) -> None:
    async with ms.user_client(EMAIL) as graph:
        single = (
            await graph.post(
                "/me/events", json=_event("2030-01-03T09:00:00", "2030-01-03T10:00:00")
            )
        ).json()
        master = (
            await graph.post(
                "/me/events",
                json=_event(
                    "2030-01-10T09:00:00",
                    "2030-01-10T10:00:00",
                    recurrence=_daily(
                        "2030-01-10", type="numbered", numberOfOccurrences=3
                    ),
                ),
            )
        ).json()
        occurrence = (
            await graph.get(f"/me/events/{master['id']}/instances", params=WINDOW)
        ).json()["value"][1]
        _, delta_link = await _delta_round(graph)
        bad_patches = [
            (
                single["id"],
                {
                    "subject": "CHANGED",
                    "end": {"dateTime": "2030-01-03T08:00:00", "timeZone": "UTC"},
                },
            ),
            (single["id"], {"isAllDay": True}),  # times are not midnight
            (
                single["id"],
                {
                    "subject": "CHANGED",
                    "singleValueExtendedProperties": [{"id": "bad", "value": "x"}],
                },
            ),
            (master["id"], {"subject": "CHANGED", "recurrence": {"pattern": 5}}),
            (
                occurrence["id"],
                {
                    "subject": "CHANGED",
                    "end": {"dateTime": "2030-01-11T08:00:00", "timeZone": "UTC"},
                },
            ),
        ]
        for item_id, body in bad_patches:
            before = (await graph.get(f"/me/events/{item_id}")).json()
            response = await graph.patch(f"/me/events/{item_id}", json=body)
            assert response.status_code == 400, (body, response.text)
            after = (await graph.get(f"/me/events/{item_id}")).json()
            assert after == before, body
        # nothing changed, so nothing to sync
        changes, _ = await _delta_round(graph, delta_link)
        assert changes == []


async def _delta_round(graph: Any, link: str | None = None) -> tuple[list[Any], str]:
    response = await (
        graph.get(link) if link else graph.get("/me/calendarView/delta", params=WINDOW)
    )
    body = response.json()
    items = list(body["value"])
    while "@odata.nextLink" in body:
        body = (await graph.get(body["@odata.nextLink"])).json()
        items += body["value"]
    return items, body["@odata.deltaLink"]


async def test_message_properties_are_validated_and_rejected_patch_changes_nothing(
    ms: Ms,
) -> None:
    async with ms.user_client(EMAIL) as graph:
        draft = (await graph.post("/me/messages", json={"subject": "A"})).json()
        for body in (
            {"subject": "CHANGED", "isRead": "nope"},  # was stored as True
            {"subject": "CHANGED", "toRecipients": "x"},  # subject was kept
            {"subject": "CHANGED", "categories": 5},  # was a 500
            {"subject": "CHANGED", "importance": "ultra"},  # was stored
        ):
            response = await graph.patch(f"/me/messages/{draft['id']}", json=body)
            assert response.status_code == 400, (body, response.text)
            assert response.json()["error"]["code"] == "RequestBodyRead"
            after = (await graph.get(f"/me/messages/{draft['id']}")).json()
            assert after["subject"] == "A"
            assert after["changeKey"] == draft["changeKey"]
        for body in (
            {"categories": "abc"},  # was split into ["a", "b", "c"]
            {"importance": "ultra"},
            {"attachments": 5},  # was a 500
            {"internetMessageHeaders": True},  # was a 500
        ):
            created = await graph.post("/me/messages", json={"subject": "B", **body})
            assert created.status_code == 400, (body, created.text)
            sent = await graph.post(
                "/me/sendMail",
                json={
                    "message": {
                        "toRecipients": [
                            {"emailAddress": {"address": "bob@contoso.example"}}
                        ],
                        **body,
                    }
                },
            )
            assert sent.status_code == 400, (body, sent.text)


async def test_delta_page_of_a_long_series_expands_it_once(
    ms: Ms, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Resolving each occurrence id re-expanded the series from its start:
    # a 10-year daily series took ~18 s for one delta page.
    calls = 0
    real_expand = events_module.expand

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return real_expand(*args, **kwargs)

    async with ms.user_client(EMAIL) as graph:
        await graph.post(
            "/me/events",
            json=_event(
                "2030-01-10T09:00:00",
                "2030-01-10T10:00:00",
                recurrence=_daily("2030-01-10"),
            ),
        )
        monkeypatch.setattr(events_module, "expand", counting)
        response = await graph.get(
            "/me/calendarView/delta",
            params={
                "startDateTime": "2030-01-01T00:00:00Z",
                "endDateTime": "2031-01-01T00:00:00Z",
            },
        )
        assert response.status_code == 200
        assert len(response.json()["value"]) == 356
    assert calls <= 3, calls


async def test_patch_notification_url_is_validated_and_applied(
    ms: Ms, receiver: Receiver
) -> None:
    expiry = (
        (ms.state.clock.now() + timedelta(days=1))
        .astimezone(UTC)
        .strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
    )
    other_url = receiver.url.replace("/hook", "/lifecycle")
    async with ms.user_client(EMAIL) as graph:
        sub = (
            await graph.post(
                "/subscriptions",
                json={
                    "changeType": "created",
                    "notificationUrl": receiver.url,
                    "resource": "me/events",
                    "expirationDateTime": expiry,
                    "clientState": "s",
                },
            )
        ).json()
        moved = await graph.patch(
            f"/subscriptions/{sub['id']}", json={"notificationUrl": other_url}
        )
        assert moved.status_code == 200, moved.text
        assert moved.json()["notificationUrl"] == other_url
        assert len(receiver.validations) == 2  # the new URL was validated
        assert ms.store.data.subscriptions.subscriptions[
            sub["id"]
        ].notification_url == (other_url)
        receiver.validation_mode = "status500"
        refused = await graph.patch(
            f"/subscriptions/{sub['id']}", json={"notificationUrl": receiver.url}
        )
        assert refused.status_code == 400
        not_https = await graph.patch(
            f"/subscriptions/{sub['id']}", json={"notificationUrl": "ftp://x/y"}
        )
        assert not_https.status_code == 400
        kept = (await graph.get(f"/subscriptions/{sub['id']}")).json()
        assert kept["notificationUrl"] == other_url
