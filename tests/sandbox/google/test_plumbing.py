"""Sandbox plumbing: control API, request log, faults, clock, persistence, concurrency."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from crmflow.sandbox.faults import Fault, FaultKind, FaultPlan
from crmflow.sandbox.google.store import GoogleStore
from crmflow.sandbox.serve import SandboxServer
from crmflow.sandbox.state import SandboxState
from tests.sandbox.conftest import CALENDAR, GoogleSandbox, http_client

ADA = "ada@example.com"
BOB = "bob@example.com"
EVENTS = "calendar/v3/calendars/primary/events"
EVENT = {
    "start": {"dateTime": "2024-03-04T09:00:00Z"},
    "end": {"dateTime": "2024-03-04T10:00:00Z"},
}


def test_users_control_is_idempotent(google: GoogleSandbox):
    created = google.control(
        "POST", "users", json={"email": "Ada.Lovelace@Example.com"}
    )
    assert created.status_code == 201
    user = created.json()
    assert user["email"] == "ada.lovelace@example.com"
    assert user["name"] == "Ada Lovelace"
    assert len(user["sub"]) == 21
    again = google.control(
        "POST", "users", json={"email": "ada.lovelace@example.com"}
    ).json()
    assert again == user
    assert [u["email"] for u in google.control("GET", "users").json()["users"]] == [
        "ada.lovelace@example.com"
    ]
    assert (
        google.control("POST", "users", json={"email": "not-an-email"}).status_code
        == 400
    )


def test_control_token_matches_token_endpoint_shape(google: GoogleSandbox):
    token = google.token(ADA, [CALENDAR])
    assert set(token) == {
        "access_token",
        "expires_in",
        "refresh_token",
        "scope",
        "token_type",
    }
    assert token["expires_in"] == 3599
    assert token["scope"] == CALENDAR
    online = google.token(ADA, [CALENDAR], offline=False)
    assert "refresh_token" not in online
    assert (
        google.control(
            "POST", "tokens", json={"email": ADA, "scopes": ["https://nope"]}
        ).status_code
        == 400
    )


def test_request_log_records_exactly_the_api_calls(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    mark = google.state.requests.last_seq
    api.get(EVENTS, params={"maxResults": 5})
    api.post(EVENTS, json=EVENT)
    api.get(f"{EVENTS}/nosuchevent")
    logged = google.logged(since=mark)
    assert [(e["method"], e["path"], e["query"], e["status"]) for e in logged] == [
        (
            "GET",
            "/google/calendar/v3/calendars/primary/events",
            [["maxResults", "5"]],
            200,
        ),
        ("POST", "/google/calendar/v3/calendars/primary/events", [], 200),
        ("GET", "/google/calendar/v3/calendars/primary/events/nosuchevent", [], 404),
    ]
    assert [e["apiMethod"] for e in logged] == [
        "calendar.events.list",
        "calendar.events.insert",
        "calendar.events.get",
    ]
    assert {e["user"] for e in logged} == {ADA}
    with_control = google.control(
        "GET", "requests", params={"since": mark, "include_control": "true"}
    ).json()
    assert len(with_control["requests"]) > len(logged)
    # Credentials in query strings are never logged.
    api.get(EVENTS, params={"access_token": "ya29.secret"})
    assert google.logged()[-1]["query"] == [["access_token", "***"]]
    assert google.control("DELETE", "requests").status_code == 204
    assert google.logged() == []


@pytest.mark.parametrize(
    ("kind", "status", "reason", "message"),
    [
        ("rate_limit_403", 403, "rateLimitExceeded", "Rate Limit Exceeded"),
        ("rate_limit_429", 429, "rateLimitExceeded", "Rate Limit Exceeded"),
        ("user_rate_limit", 403, "userRateLimitExceeded", "User Rate Limit Exceeded"),
        ("quota_exceeded", 403, "quotaExceeded", "Calendar usage limits exceeded."),
        ("backend_error", 500, "backendError", "Backend Error"),
        ("unavailable", 503, "backendError", "The service is currently unavailable."),
        ("auth_error", 401, "authError", "Invalid Credentials"),
    ],
)
def test_error_faults_use_google_envelopes(
    google: GoogleSandbox, kind, status, reason, message
):
    api = google.api(google.access(ADA))
    google.add_fault(kind=kind, user=ADA, api="calendar", count=1, retry_after_s=7)
    response = api.get(EVENTS)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == status
    assert error["errors"][0]["reason"] == reason
    assert error["errors"][0]["message"] == message
    if kind != "auth_error":
        assert error["message"] == message
        assert response.headers["retry-after"] == "7"
    # count=1: the next call goes through
    assert api.get(EVENTS).status_code == 200


def test_gmail_concurrency_fault_and_aip_envelope(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    google.add_fault(kind="concurrent_requests", user=ADA, api="gmail", count=1)
    response = api.get("gmail/v1/users/me/messages")
    assert response.status_code == 429
    assert response.json()["error"] == {
        "code": 429,
        "message": "Too many concurrent requests for user",
        "errors": [
            {
                "domain": "usageLimits",
                "reason": "rateLimitExceeded",
                "message": "Too many concurrent requests for user",
            }
        ],
        "status": "RESOURCE_EXHAUSTED",
    }


def test_faults_are_scoped_by_user_and_method(google: GoogleSandbox):
    ada = google.api(google.access(ADA))
    bob = google.api(google.access(BOB))
    google.add_fault(kind="backend_error", user=ADA, method="calendar.events.insert")
    assert bob.post(EVENTS, json=EVENT).status_code == 200
    assert ada.get(EVENTS).status_code == 200
    assert ada.post(EVENTS, json=EVENT).status_code == 500
    assert ada.post(EVENTS, json=EVENT).status_code == 500  # unlimited until removed
    faults = google.control("GET", "faults").json()["faults"]
    assert faults[0]["fired"] == 2
    assert google.control("DELETE", f"faults/{faults[0]['id']}").status_code == 204
    assert ada.post(EVENTS, json=EVENT).status_code == 200


def test_fault_rate_zero_never_fires_and_bad_spec_is_400(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    google.add_fault(kind="backend_error", rate=0.0)
    assert all(api.get(EVENTS).status_code == 200 for _ in range(5))
    assert (
        google.control("POST", "faults", json={"kind": "meteor_strike"}).status_code
        == 400
    )
    assert (
        google.control(
            "POST", "faults", json={"kind": "latency", "rate": 2}
        ).status_code
        == 400
    )


def test_fault_rate_is_random_but_seeded():
    plan_a, plan_b = FaultPlan(seed=7), FaultPlan(seed=7)
    for plan in (plan_a, plan_b):
        plan.add(Fault(kind=FaultKind.BACKEND_ERROR, rate=0.5))
    draws_a = [
        bool(plan_a.draw({FaultKind.BACKEND_ERROR}, user=None, api=None, method=None))
        for _ in range(50)
    ]
    draws_b = [
        bool(plan_b.draw({FaultKind.BACKEND_ERROR}, user=None, api=None, method=None))
        for _ in range(50)
    ]
    assert draws_a == draws_b
    assert 5 < sum(draws_a) < 45


def test_latency_fault_still_answers(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    google.add_fault(kind="latency", user=ADA, latency_ms=50, count=1)
    assert api.get(EVENTS).status_code == 200
    assert google.control("GET", "faults").json()["faults"] == []


def test_drop_connection_fault(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    google.add_fault(kind="drop_connection", user=ADA, count=1)
    with pytest.raises(httpx.RemoteProtocolError):
        api.get(EVENTS)
    assert api.get(EVENTS).status_code == 200
    dropped = [e for e in google.logged() if e["dropped"]]
    assert len(dropped) == 1


def test_token_endpoint_faults(google: GoogleSandbox):
    token = google.token(ADA, [CALENDAR])
    client = google.control("GET", "clients").json()["clients"][0]
    google.add_fault(kind="unavailable", api="oauth", method="oauth.token", count=1)
    form = {
        "grant_type": "refresh_token",
        "refresh_token": token["refresh_token"],
        "client_id": client["client_id"],
        "client_secret": client["client_secret"],
    }
    failed = google.http.post(google.base + "token", data=form)
    assert failed.status_code == 503
    assert failed.json()["error"] == "temporarily_unavailable"
    assert google.http.post(google.base + "token", data=form).status_code == 200


def test_clock_control_moves_forward_only(google: GoogleSandbox):
    before = google.control("GET", "clock").json()
    after = google.control("POST", "clock", json={"advance_s": 3600}).json()
    assert after["offset_s"] >= before["offset_s"] + 3600
    assert google.control("POST", "clock", json={"advance_s": -1}).status_code == 400


def test_a_harness_can_bring_a_reset_state_back_to_real_time(google: GoogleSandbox):
    """Only in-process (no control endpoint): the test suite's fixture does it
    right after a reset, so days advanced by one test never shift the next."""
    google.control("POST", "clock", json={"advance_s": 30 * 86400})
    assert google.state.clock.offset_s >= 30 * 86400
    google.state.reset()
    assert google.state.clock.offset_s >= 30 * 86400  # reset keeps it
    google.state.clock.back_to_real_time()
    assert google.state.clock.offset_s == 0
    assert google.control("GET", "clock").json()["offset_s"] == 0


def test_reset_forgets_everything(google: GoogleSandbox):
    google.token(ADA, [CALENDAR])
    assert google.control("POST", "reset").status_code == 204
    assert google.control("GET", "users").json()["users"] == []
    assert google.control("GET", "clients").json()["clients"] == []


def test_concurrent_inserts_from_many_threads(google: GoogleSandbox):
    token = google.access(ADA)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            with http_client(
                base_url=google.base, headers={"Authorization": f"Bearer {token}"}
            ) as api:
                for i in range(10):
                    response = api.post(
                        EVENTS, json={**EVENT, "id": f"t{n:02d}e{i:04d}"}
                    )
                    assert response.status_code == 200, response.text
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    api = google.api(token)
    listed = api.get(EVENTS, params={"maxResults": 2500}).json()
    assert len(listed["items"]) == 120
    etags = {e["etag"] for e in listed["items"]}
    assert len(etags) == 120  # strictly increasing version stamps, no duplicates


def test_sqlite_persistence_survives_restart(tmp_path: Path):
    path = tmp_path / "sandbox.sqlite3"
    state = SandboxState(persist_path=path)
    with SandboxServer(state) as server, http_client() as http:
        base = server.google_url
        token = http.post(
            base + "_sandbox/tokens", json={"email": ADA, "scopes": [CALENDAR]}
        ).json()
        api_headers = {"Authorization": f"Bearer {token['access_token']}"}
        created = http.post(
            base + EVENTS, json={**EVENT, "id": "persist01"}, headers=api_headers
        ).json()
        sync = http.get(base + EVENTS, headers=api_headers).json()["nextSyncToken"]
    state.close()

    reloaded = SandboxState(persist_path=path)
    with SandboxServer(reloaded) as server, http_client() as http:
        base = server.google_url
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        got = http.get(base + f"{EVENTS}/persist01", headers=headers)
        assert got.status_code == 200
        assert got.json()["etag"] == created["etag"]
        assert (
            http.get(base + EVENTS, params={"syncToken": sync}, headers=headers).json()[
                "items"
            ]
            == []
        )
    reloaded.close()
    with reloaded.lock:
        assert (
            "persist01"
            in reloaded.extension(GoogleStore).calendars.data.calendars[ADA].events
        )


def test_optional_per_minute_quotas(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    google.control("PATCH", "config", json={"user_requests_per_minute": 3})
    assert [api.get(EVENTS).status_code for _ in range(3)] == [200, 200, 200]
    limited = api.get(EVENTS)
    assert limited.status_code == 403
    error = limited.json()["error"]
    assert error["errors"][0]["reason"] == "rateLimitExceeded"
    assert error["status"] == "PERMISSION_DENIED"
    assert error["details"][0]["metadata"]["quota_limit"] == "defaultPerMinutePerUser"
    assert error["details"][0]["metadata"]["quota_limit_value"] == "3"
    google.state.clock.advance(60)
    assert api.get(EVENTS).status_code == 200
    google.control(
        "PATCH",
        "config",
        json={"user_requests_per_minute": None, "project_requests_per_minute": 1},
    )
    google.state.clock.advance(60)
    assert api.get(EVENTS).status_code == 200
    assert api.get(EVENTS).status_code == 429


def test_unimplemented_discovery_methods_answer_501_in_google_envelope(
    google: GoogleSandbox,
):
    api = google.api(google.access(ADA))
    response = api.post(f"{EVENTS}/abcdef123/move", params={"destination": "other"})
    assert response.status_code == 501
    assert response.json()["error"]["errors"][0]["reason"] == "notImplemented"
    unknown = api.get("calendar/v3/nowhere")
    assert unknown.status_code == 404
