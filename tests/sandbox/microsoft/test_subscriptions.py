"""Change notifications: validation handshake, notifications, retries, lifecycle events, renewal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from tests.sandbox.microsoft.conftest import Ms, Receiver

EMAIL = "ada@contoso.example"


def _expiry(ms: Ms, minutes: float) -> str:
    return (
        (ms.state.clock.now() + timedelta(minutes=minutes))
        .astimezone(UTC)
        .strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
    )


def _sub(ms: Ms, rx: Receiver, **extra: Any) -> dict[str, Any]:
    body = {
        "changeType": "created,updated,deleted",
        "notificationUrl": rx.url,
        "resource": "me/events",
        "expirationDateTime": _expiry(ms, 60 * 24),
        "clientState": "secret-state",
    }
    body.update(extra)
    return body


EVENT = {
    "subject": "Watched",
    "start": {"dateTime": "2030-01-07T09:00:00", "timeZone": "UTC"},
    "end": {"dateTime": "2030-01-07T10:00:00", "timeZone": "UTC"},
}


async def test_handshake_then_notifications_for_create_update_delete(
    ms: Ms, receiver: Receiver
) -> None:
    async with ms.user_client(EMAIL) as graph:
        created = await graph.post("/subscriptions", json=_sub(ms, receiver))
        assert created.status_code == 201, created.text
        sub = created.json()
        assert sub["changeType"] == "created,updated,deleted"
        assert sub["clientState"] == "secret-state"
        # the receiver got the URL-decoded token, which contains spaces
        assert len(receiver.validations) == 1
        assert " " in receiver.validations[0]
        ev = (await graph.post("/me/events", json=EVENT)).json()
        await graph.patch(f"/me/events/{ev['id']}", json={"subject": "Changed"})
        await graph.delete(f"/me/events/{ev['id']}")
    receiver.wait_for(lambda: len(receiver.items()) >= 3)
    items = receiver.items()
    assert [i["changeType"] for i in items] == ["created", "updated", "deleted"]
    first = items[0]
    assert first["subscriptionId"] == sub["id"]
    assert first["clientState"] == "secret-state"
    assert first["resource"].startswith("Users/")
    assert f"/Events/{ev['id']}" in first["resource"]
    assert first["resourceData"]["@odata.type"] == "#Microsoft.Graph.Event"
    assert first["resourceData"]["id"] == ev["id"]
    assert first["resourceData"]["@odata.etag"] == ev["@odata.etag"]
    assert first["tenantId"]
    assert first["subscriptionExpirationDateTime"].endswith("+00:00")


async def test_handshake_failures_are_400(ms: Ms, receiver: Receiver) -> None:
    async with ms.user_client(EMAIL) as graph:
        receiver.validation_mode = "encoded"
        encoded = await graph.post("/subscriptions", json=_sub(ms, receiver))
        assert encoded.status_code == 400
        assert encoded.json()["error"]["message"] == (
            "Subscription validation request failed. Response must exactly match validationToken query parameter."
        )
        receiver.validation_mode = "status500"
        failed = await graph.post("/subscriptions", json=_sub(ms, receiver))
        assert failed.status_code == 400
        assert "must respond with 200 OK" in failed.json()["error"]["message"]
        receiver.validation_mode = "html"
        wrong_type = await graph.post("/subscriptions", json=_sub(ms, receiver))
        assert wrong_type.status_code == 400
        receiver.validation_mode = (
            "slow"  # the receiver sleeps 3 s; the test timeout is 1 s
        )
        slow = await graph.post("/subscriptions", json=_sub(ms, receiver))
        assert slow.status_code == 400
        assert slow.json()["error"] == {
            **slow.json()["error"],
            "code": "InvalidRequest",
            "message": "Subscription validation request timed out.",
        }
        listed = (await graph.get("/subscriptions")).json()["value"]
    assert listed == []


async def test_subscription_body_rules(ms: Ms, receiver: Receiver) -> None:
    ms.add_user("bob@contoso.example")
    async with ms.user_client(EMAIL) as graph:
        too_long = await graph.post(
            "/subscriptions",
            json=_sub(ms, receiver, expirationDateTime=_expiry(ms, 10_071)),
        )
        assert too_long.status_code == 400
        assert too_long.json()["error"]["code"] == "ExtensionError"
        assert (
            too_long.json()["error"]["message"]
            == "Subscription expiration can only be 10070 minutes in the future."
        )
        assert (
            await graph.post(
                "/subscriptions",
                json=_sub(ms, receiver, expirationDateTime=_expiry(ms, 10_069)),
            )
        ).status_code == 201
        big_state = await graph.post(
            "/subscriptions", json=_sub(ms, receiver, clientState="x" * 129)
        )
        assert big_state.status_code == 400
        other = await graph.post(
            "/subscriptions",
            json=_sub(ms, receiver, resource="users/bob@contoso.example/events"),
        )
        assert other.status_code == 403
    ms.control("PATCH", "/config", {"allow_http_webhooks": False})
    async with ms.user_client(EMAIL) as graph:
        plain_http = await graph.post("/subscriptions", json=_sub(ms, receiver))
    assert plain_http.status_code == 400


async def test_unacknowledged_notifications_are_retried(
    ms: Ms, receiver: Receiver
) -> None:
    async with ms.user_client(EMAIL) as graph:
        assert (
            await graph.post("/subscriptions", json=_sub(ms, receiver))
        ).status_code == 201
        receiver.fail_first = 2
        await graph.post("/me/events", json=EVENT)
    receiver.wait_for(lambda: len(receiver.items()) == 1)
    assert receiver.attempts == 3


async def test_slow_receiver_counts_as_failed_and_gets_missed_lifecycle(
    ms: Ms, receiver: Receiver
) -> None:
    lifecycle = receiver.url.replace("/hook", "/lifecycle")
    async with ms.user_client(EMAIL) as graph:
        assert (
            await graph.post(
                "/subscriptions",
                json=_sub(ms, receiver, lifecycleNotificationUrl=lifecycle),
            )
        ).status_code == 201
        receiver.delay_s = 0.8  # > the 0.5 s acknowledgement timeout of the tests
        await graph.post("/me/events", json=EVENT)
        receiver.wait_for(lambda: receiver.attempts >= 3)
        receiver.delay_s = 0.0
    receiver.wait_for(
        lambda: any(
            i.get("lifecycleEvent") == "missed"
            for i in receiver.items("lifecycleEvent")
        )
    )


async def test_lifecycle_events_renewal_reauthorize_delete(
    ms: Ms, receiver: Receiver
) -> None:
    lifecycle = receiver.url.replace("/hook", "/lifecycle")
    async with ms.user_client(EMAIL) as graph:
        sub = (
            await graph.post(
                "/subscriptions",
                json=_sub(ms, receiver, lifecycleNotificationUrl=lifecycle),
            )
        ).json()
        assert sub["lifecycleNotificationUrl"] == lifecycle
        # lifecycle URL validated too (same receiver: one handshake per URL)
        assert len(receiver.validations) == 2
        # near expiry -> reauthorizationRequired
        ms.control("POST", "/clock", {"advance_s": 23.5 * 3600})
        receiver.wait_for(
            lambda: any(
                i["lifecycleEvent"] == "reauthorizationRequired"
                for i in receiver.items("lifecycleEvent")
            )
        )
        graph.headers["Authorization"] = f"Bearer {ms.token(EMAIL)}"
        renewed = await graph.patch(
            f"/subscriptions/{sub['id']}",
            json={"expirationDateTime": _expiry(ms, 60 * 48)},
        )
        assert renewed.status_code == 200
        assert renewed.json()["expirationDateTime"] != sub["expirationDateTime"]
        no_lifecycle_patch = await graph.patch(
            f"/subscriptions/{sub['id']}", json={"lifecycleNotificationUrl": lifecycle}
        )
        assert no_lifecycle_patch.status_code == 400
        assert (
            await graph.post(f"/subscriptions/{sub['id']}/reauthorize")
        ).status_code == 204
        assert (
            ms.control(
                "POST", f"/subscriptions/{sub['id']}/lifecycle", {"event": "missed"}
            ).status_code
            == 200
        )
        receiver.wait_for(
            lambda: any(
                i["lifecycleEvent"] == "missed"
                for i in receiver.items("lifecycleEvent")
            )
        )
        assert (await graph.delete(f"/subscriptions/{sub['id']}")).status_code == 204
        assert (await graph.get(f"/subscriptions/{sub['id']}")).status_code == 404


async def test_subscription_removed_and_expiry(ms: Ms, receiver: Receiver) -> None:
    lifecycle = receiver.url.replace("/hook", "/lifecycle")
    async with ms.user_client(EMAIL) as graph:
        sub = (
            await graph.post(
                "/subscriptions",
                json=_sub(ms, receiver, lifecycleNotificationUrl=lifecycle),
            )
        ).json()
        ms.control(
            "POST",
            f"/subscriptions/{sub['id']}/lifecycle",
            {"event": "subscriptionRemoved"},
        )
        receiver.wait_for(
            lambda: any(
                i["lifecycleEvent"] == "subscriptionRemoved"
                for i in receiver.items("lifecycleEvent")
            )
        )
        assert (await graph.get(f"/subscriptions/{sub['id']}")).status_code == 404
        short = (
            await graph.post(
                "/subscriptions",
                json=_sub(ms, receiver, expirationDateTime=_expiry(ms, 30)),
            )
        ).json()
    ms.control("POST", "/clock", {"advance_s": 31 * 60})
    receiver.wait_for(
        lambda: (
            short["id"]
            not in {
                s["id"]
                for s in ms.control("GET", "/subscriptions").json()["subscriptions"]
            }
        )
    )


async def test_occurrence_delete_notifies_master_updated_and_revoke_asks_reauthorization(
    ms: Ms, receiver: Receiver
) -> None:
    lifecycle = receiver.url.replace("/hook", "/lifecycle")
    recurrence = {
        "pattern": {"type": "daily", "interval": 1},
        "range": {
            "type": "numbered",
            "startDate": "2030-01-07",
            "numberOfOccurrences": 2,
        },
    }
    async with ms.user_client(EMAIL) as graph:
        master = (
            await graph.post("/me/events", json={**EVENT, "recurrence": recurrence})
        ).json()
        await graph.post(
            "/subscriptions",
            json=_sub(ms, receiver, lifecycleNotificationUrl=lifecycle),
        )
        view = (
            await graph.get(
                "/me/calendarView",
                params={
                    "startDateTime": "2030-01-01T00:00:00Z",
                    "endDateTime": "2030-02-01T00:00:00Z",
                },
            )
        ).json()["value"]
        await graph.delete(f"/me/events/{view[0]['id']}")
    receiver.wait_for(lambda: len(receiver.items()) >= 1)
    assert receiver.items()[0]["changeType"] == "updated", receiver.items()
    assert receiver.items()[0]["resourceData"]["id"] == master["id"]
    ms.control("POST", "/grants/revoke", {"email": EMAIL})
    receiver.wait_for(
        lambda: any(
            i["lifecycleEvent"] == "reauthorizationRequired"
            for i in receiver.items("lifecycleEvent")
        )
    )


async def test_out_of_band_edit_notifies_and_dropped_notification_fault(
    ms: Ms, receiver: Receiver
) -> None:
    async with ms.user_client(EMAIL) as graph:
        await graph.post(
            "/subscriptions", json=_sub(ms, receiver, changeType="created")
        )
    ms.control("POST", "/faults", {"kind": "drop_notification", "count": 1})
    assert ms.control("POST", f"/users/{EMAIL}/events", EVENT).status_code == 201
    second = ms.control("POST", f"/users/{EMAIL}/events", EVENT).json()
    receiver.wait_for(lambda: len(receiver.items()) >= 1)
    assert [i["resourceData"]["id"] for i in receiver.items()] == [second["id"]]


def test_validation_token_is_quoted_on_the_wire(ms: Ms) -> None:
    # documents the encoding the receiver must undo (the token has spaces)
    from crmflow.sandbox.microsoft.subscriptions import validation_token

    token = validation_token()
    assert quote(token, safe="") != token
    assert (
        httpx.URL(f"http://x/?validationToken={quote(token, safe='')}").params[
            "validationToken"
        ]
        == token
    )
    assert datetime.now(UTC)
