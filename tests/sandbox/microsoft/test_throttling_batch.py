"""Throttling (429 TooManyRequests / ApplicationThrottled), injected faults, $batch, request log, persistence, demo seed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from crmflow.sandbox.microsoft import MicrosoftStore, seed_demo_microsoft
from crmflow.sandbox.microsoft.app import MicrosoftApp
from crmflow.sandbox.microsoft.seed import DEMO_EXTENDED_PROPERTY
from crmflow.sandbox.state import SandboxState
from tests.sandbox.microsoft.conftest import Ms

EMAIL = "ada@contoso.example"
EVENT = {
    "subject": "B",
    "start": {"dateTime": "2030-01-07T09:00:00", "timeZone": "UTC"},
    "end": {"dateTime": "2030-01-07T10:00:00", "timeZone": "UTC"},
}


async def test_more_than_four_in_flight_is_mailbox_concurrency(ms: Ms) -> None:
    async with ms.user_client(EMAIL) as graph:
        ms.control(
            "POST", "/faults", {"kind": "latency", "latency_ms": 300, "count": 6}
        )
        responses = await asyncio.gather(*(graph.get("/me/events") for _ in range(6)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 4
    throttled = [r for r in responses if r.status_code == 429]
    assert len(throttled) == 2
    assert throttled[0].json()["error"]["code"] == "ApplicationThrottled"
    assert (
        throttled[0].json()["error"]["message"]
        == "Application is over its MailboxConcurrency limit."
    )


async def test_request_rate_limit_is_too_many_requests_with_retry_after(ms: Ms) -> None:
    ms.control("PATCH", "/config", {"mailbox_request_limit": 3})
    async with ms.user_client(EMAIL) as graph:
        statuses = [(await graph.get("/me/events")).status_code for _ in range(3)]
        limited = await graph.get("/me/events")
    assert statuses == [200, 200, 200]
    assert limited.status_code == 429
    error = limited.json()["error"]
    assert error["code"] == "TooManyRequests"
    assert error["message"] == "Please retry again later."
    assert error["innerError"]["status"] == "429"
    assert float(limited.headers["retry-after"]) > 0


async def test_graph_faults_fractional_retry_after_412_503_504(ms: Ms) -> None:
    async with ms.user_client(EMAIL) as graph:
        ms.control(
            "POST",
            "/faults",
            {"kind": "graph_throttled", "retry_after_s": 2.128, "count": 1},
        )
        throttled = await graph.get("/me/events")
        assert throttled.status_code == 429
        assert throttled.headers["retry-after"] == "2.128"
        ms.control(
            "POST",
            "/faults",
            {
                "kind": "graph_irresolvable_conflict",
                "count": 1,
                "method": "graph.calendars.list",
            },
        )
        conflict = await graph.get("/me/calendars")
        assert conflict.status_code == 412
        assert conflict.json()["error"]["code"] == "ErrorIrresolvableConflict"
        ms.control("POST", "/faults", {"kind": "graph_transient_503", "count": 1})
        assert (await graph.get("/me/events")).status_code == 503
        ms.control("POST", "/faults", {"kind": "graph_gateway_timeout", "count": 1})
        timeout = await graph.get("/me/events")
        assert timeout.status_code == 504
        assert timeout.json()["error"]["code"] == "UnknownError"
        ms.control(
            "POST", "/faults", {"kind": "unavailable", "count": 1, "retry_after_s": 3}
        )
        unavailable = await graph.get("/me/events")
        assert unavailable.status_code == 503
        assert unavailable.headers["retry-after"] == "3"
        assert (await graph.get("/me/events")).status_code == 200


async def test_concurrent_item_save_after_the_write(ms: Ms) -> None:
    async with ms.user_client(EMAIL) as graph:
        ms.control(
            "POST", "/faults", {"kind": "graph_concurrent_item_save", "count": 1}
        )
        failed = await graph.post("/me/events", json=EVENT)
        assert failed.status_code == 503
        assert failed.json()["error"]["code"] == "ConcurrentItemSave"
        # ...but the event exists (checklist 15)
        assert len((await graph.get("/me/events")).json()["value"]) == 1


async def test_short_page_fault_returns_empty_page_with_next_link(ms: Ms) -> None:
    async with ms.user_client(EMAIL) as graph:
        await graph.post("/me/events", json=EVENT)
        ms.control("POST", "/faults", {"kind": "short_page", "count": 1})
        short = (await graph.get("/me/events")).json()
        assert short["value"] == []
        follow = (await graph.get(short["@odata.nextLink"])).json()
    assert len(follow["value"]) == 1


async def test_batch_items_dependencies_and_limits(ms: Ms) -> None:
    async with ms.user_client(EMAIL) as graph:
        requests = [
            {
                "id": "1",
                "method": "POST",
                "url": "/me/events",
                "headers": {"Content-Type": "application/json"},
                "body": EVENT,
            },
            {"id": "2", "method": "GET", "url": "/me/events", "dependsOn": ["1"]},
            {"id": "3", "method": "GET", "url": "/me/events/doesnotexist"},
            {"id": "4", "method": "GET", "url": "/me", "dependsOn": ["3"]},
            {"id": "5", "method": "POST", "url": "/me/events", "body": EVENT},
        ]
        response = await graph.post("/$batch", json={"requests": requests})
        assert response.status_code == 200
        by_id = {r["id"]: r for r in response.json()["responses"]}
        assert by_id["1"]["status"] == 201
        assert by_id["2"]["status"] == 200
        assert len(by_id["2"]["body"]["value"]) == 1
        assert by_id["3"]["status"] == 404
        assert by_id["4"]["status"] == 424
        assert by_id["5"]["status"] == 400
        too_many = await graph.post(
            "/$batch",
            json={
                "requests": [
                    {"id": str(i), "method": "GET", "url": "/me"} for i in range(21)
                ]
            },
        )
        assert too_many.status_code == 400
        ms.control(
            "POST",
            "/faults",
            {
                "kind": "graph_throttled",
                "retry_after_s": 1.5,
                "count": 1,
                "method": "graph.events.list",
            },
        )
        throttled = await graph.post(
            "/$batch",
            json={
                "requests": [
                    {"id": "a", "method": "GET", "url": "/me/events"},
                    {"id": "b", "method": "GET", "url": "/me"},
                ]
            },
        )
        items = {r["id"]: r for r in throttled.json()["responses"]}
        assert items["a"]["status"] == 429
        assert items["a"]["headers"]["retry-after"] == "1.5"
        assert items["b"]["status"] == 200


async def test_request_log_records_graph_calls_with_user_and_method(ms: Ms) -> None:
    since = ms.state.requests.last_seq
    async with ms.user_client(EMAIL) as graph:
        await graph.get("/me/events", params={"$top": "1"})
    log = ms.control("GET", f"/requests?since={since}").json()["requests"]
    entry = next(e for e in log if e["path"].endswith("/v1.0/me/events"))
    assert entry["user"] == EMAIL
    assert entry["apiMethod"] == "graph.events.list"
    assert entry["status"] == 200
    assert ["$top", "1"] in entry["query"]


def test_persistence_round_trip_and_demo_seed(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    state = SandboxState(persist_path=path, seed=1)
    counts = seed_demo_microsoft(state, EMAIL)
    assert counts["events"] == 4
    assert counts["messages"] >= 5
    assert seed_demo_microsoft(state, EMAIL) == {"events": 0, "messages": 0}
    state.close()
    again = SandboxState(persist_path=path, seed=1)
    with again.lock:
        store = again.extension(MicrosoftStore)
        events = store.calendars(EMAIL).data.events.values()
        kinds = {("series" if e.recurrence else "single", e.is_all_day) for e in events}
        assert ("series", False) in kinds
        assert ("single", True) in kinds
        series = next(e for e in events if e.recurrence)
        assert series.exceptions
        assert series.cancelled
        zones = {e.start_zone for e in events}
        assert {
            "W. Europe Standard Time",
            "Pacific Standard Time",
            "India Standard Time",
        } <= zones
        assert any(
            p["id"] == DEMO_EXTENDED_PROPERTY for e in events for p in e.extended
        )
        assert len(store.mail(EMAIL).data.messages) >= 5
    again.close()


async def test_mounted_beside_google_in_the_shared_sandbox_app() -> None:
    import httpx

    from crmflow.sandbox.app import create_sandbox_app
    from crmflow.sandbox.microsoft import create_microsoft_app

    state = SandboxState(seed=3)
    root = "http://sandbox.test"
    microsoft = create_microsoft_app(
        state, base_url=f"{root}/microsoft", log_requests=False
    )
    app = create_sandbox_app(
        state, base_url=f"{root}/", mounts={"/microsoft": microsoft}
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=root
    ) as client:
        assert (
            await client.post("/microsoft/_sandbox/users", json={"email": EMAIL})
        ).status_code == 201
        token = (
            await client.post("/microsoft/_sandbox/tokens", json={"email": EMAIL})
        ).json()["access_token"]
        me = await client.get(
            "/microsoft/v1.0/me", headers={"Authorization": f"Bearer {token}"}
        )
        assert me.status_code == 200
        assert me.json()["mail"] == EMAIL
        config = await client.get(
            f"{root}/microsoft/common/v2.0/.well-known/openid-configuration"
        )
        assert (
            config.json()["token_endpoint"]
            == f"{root}/microsoft/common/oauth2/v2.0/token"
        )
        log = (await client.get("/microsoft/_sandbox/requests")).json()
    assert any(
        e["path"] == "/microsoft/v1.0/me" and e["user"] == EMAIL
        for e in log["requests"]
    )
    assert isinstance(microsoft, MicrosoftApp)
    await microsoft.dispatcher.stop()
