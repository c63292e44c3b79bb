"""``/api/calendar-accounts`` and ``/api/calendar-conflicts`` over HTTP, on both
databases: each endpoint acts as the token's user; other users get 404."""

from __future__ import annotations

import httpx

from crmflow.domain.integrations import IntegrationKind, ProviderKey
from crmflow.sandbox.google.demo import seed_demo_google
from tests.calendar_sync.conftest import GOOGLE_EMAIL
from tests.connections.conftest import Flow
from tests.servers.sandbox import Sandbox


async def _connect(flow: Flow, sandbox: Sandbox, actor) -> str:
    demo = seed_demo_google(sandbox.state, GOOGLE_EMAIL)
    result = await flow.connect(
        actor.ctx, ProviderKey.GOOGLE, IntegrationKind.CALENDAR, GOOGLE_EMAIL
    )
    assert demo.calendar_id
    return str(result.integration.id)


async def test_choose_sync_and_read_the_log(
    web: httpx.AsyncClient, flow: Flow, sandbox: Sandbox, tenants
):
    alice = tenants.alice
    integration_id = await _connect(flow, sandbox, alice)

    choices = await web.get(
        "/api/calendar-accounts/choices",
        params={"integration_id": integration_id},
        headers=alice.headers,
    )
    assert choices.status_code == 200, choices.text
    primary = next(c for c in choices.json() if c["primary"])

    created = await web.post(
        "/api/calendar-accounts",
        json={"integration_id": integration_id, "calendar_id": primary["id"]},
        headers=alice.headers,
    )
    assert created.status_code == 201, created.text
    account = created.json()
    assert account["direction"] == "two_way"
    assert account["strategy"] == "manual"
    assert account["export_scope"] == "own"

    again = await web.post(
        "/api/calendar-accounts",
        json={"integration_id": integration_id, "calendar_id": primary["id"]},
        headers=alice.headers,
    )
    assert again.status_code == 409
    assert "synced already" in again.json()["detail"]

    run = await web.post(
        f"/api/calendar-accounts/{account['id']}/sync", headers=alice.headers
    )
    assert run.status_code == 200, run.text
    summary = run.json()
    assert summary["status"] == "success"
    assert summary["events_imported"] == 4

    log = await web.get("/api/calendar-sync-log", headers=alice.headers)
    assert [r["id"] for r in log.json()] == [summary["id"]]

    patched = await web.patch(
        f"/api/calendar-accounts/{account['id']}",
        json={"strategy": "calendar_wins", "direction": "import_only"},
        headers=alice.headers,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["strategy"] == "calendar_wins"
    assert patched.json()["mapped_events"] == 4

    listed = await web.get("/api/calendar-accounts", headers=alice.headers)
    assert [a["id"] for a in listed.json()] == [account["id"]]
    assert (
        await web.get("/api/calendar-conflicts", headers=alice.headers)
    ).json() == []

    removed = await web.delete(
        f"/api/calendar-accounts/{account['id']}", headers=alice.headers
    )
    assert removed.status_code == 204
    # the appointments stay
    appointments = await web.get("/api/appointments", headers=alice.headers)
    assert appointments.json()["total"] == 4


async def test_bad_input_is_a_clear_4xx(
    web: httpx.AsyncClient, flow: Flow, sandbox: Sandbox, tenants
):
    alice = tenants.alice
    integration_id = await _connect(flow, sandbox, alice)
    unknown = await web.post(
        "/api/calendar-accounts",
        json={"integration_id": integration_id, "calendar_id": "nope@example.com"},
        headers=alice.headers,
    )
    assert unknown.status_code == 404
    assert "choose one of the listed calendars" in unknown.json()["detail"]
    typo = await web.post(
        "/api/calendar-accounts",
        json={
            "integration_id": integration_id,
            "calendar_id": GOOGLE_EMAIL,
            "strategy": "whoever",
        },
        headers=alice.headers,
    )
    assert typo.status_code == 422
    extra = await web.post(
        "/api/calendar-accounts",
        json={"integration_id": integration_id, "calendar_id": "x", "colour": "red"},
        headers=alice.headers,
    )
    assert extra.status_code == 422
    assert (await web.get("/api/calendar-accounts", headers=alice.headers)).json() == []


async def test_other_users_get_404(
    web: httpx.AsyncClient, flow: Flow, sandbox: Sandbox, tenants
):
    alice = tenants.alice
    integration_id = await _connect(flow, sandbox, alice)
    account = (
        await web.post(
            "/api/calendar-accounts",
            json={"integration_id": integration_id, "calendar_id": GOOGLE_EMAIL},
            headers=alice.headers,
        )
    ).json()
    for other in (tenants.amy, tenants.bob):
        h = other.headers
        base = f"/api/calendar-accounts/{account['id']}"
        assert (await web.get(base, headers=h)).status_code == 404
        assert (await web.post(base + "/sync", headers=h)).status_code == 404
        assert (
            await web.patch(base, json={"strategy": "crm_wins"}, headers=h)
        ).status_code == 404
        assert (await web.delete(base, headers=h)).status_code == 404
        assert (
            await web.get(
                "/api/calendar-accounts/choices",
                params={"integration_id": integration_id},
                headers=h,
            )
        ).status_code == 404
        assert (await web.get("/api/calendar-accounts", headers=h)).json() == []
    # alice's account is untouched
    still = await web.get(
        f"/api/calendar-accounts/{account['id']}", headers=alice.headers
    )
    assert still.json()["strategy"] == "manual"
