"""Calendar push: events.watch, notifications, channels.stop (checklist 17-21)."""

from __future__ import annotations

from email.utils import parsedate_to_datetime

from tests.sandbox.conftest import GoogleSandbox, WebhookReceiver, wait_until

ADA = "ada@example.com"
EVENTS = "calendar/v3/calendars/primary/events"
EVENT = {
    "start": {"dateTime": "2024-03-04T09:00:00Z"},
    "end": {"dateTime": "2024-03-04T10:00:00Z"},
}


def _watch(api, webhook: WebhookReceiver, channel_id: str = "chan-1", **extra):
    body = {
        "id": channel_id,
        "type": "web_hook",
        "address": webhook.url,
        "token": "target=crm",
    }
    body.update(extra)
    return api.post(f"{EVENTS}/watch", json=body)


def test_watch_sends_sync_first_then_exists_with_real_headers(
    google: GoogleSandbox, webhook: WebhookReceiver
):
    api = google.api(google.access(ADA))
    now_ms = google.state.clock.now_ms()
    response = _watch(api, webhook)
    assert response.status_code == 200
    channel = response.json()
    assert channel["kind"] == "api#channel"
    assert channel["id"] == "chan-1"
    assert channel["token"] == "target=crm"
    assert (
        channel["resourceUri"]
        == google.calendar_base + "calendars/primary/events?alt=json"
    )
    # Default ttl 604800 s; expiration is a string int64 in ms.
    assert int(channel["expiration"]) - now_ms >= 604_800_000 - 60_000
    (sync,) = webhook.wait_for(1)
    headers = sync.headers
    assert headers["x-goog-resource-state"] == "sync"
    assert headers["x-goog-message-number"] == "1"
    assert headers["x-goog-channel-id"] == "chan-1"
    assert headers["x-goog-channel-token"] == "target=crm"
    assert headers["x-goog-resource-id"] == channel["resourceId"]
    assert headers["x-goog-resource-uri"] == channel["resourceUri"]
    assert headers["user-agent"] == "APIs-Google"
    assert sync.body == b""
    expiration = parsedate_to_datetime(headers["x-goog-channel-expiration"])
    assert int(expiration.timestamp()) == int(channel["expiration"]) // 1000

    created = api.post(EVENTS, json=EVENT).json()
    api.delete(f"{EVENTS}/{created['id']}")
    google.insert_event(ADA, EVENT)  # out-of-band edits notify too
    received = webhook.wait_for(4)
    assert [n.headers["x-goog-resource-state"] for n in received] == [
        "sync",
        "exists",
        "exists",
        "exists",
    ]
    numbers = [int(n.headers["x-goog-message-number"]) for n in received]
    assert numbers == sorted(numbers)
    assert len(set(numbers)) == 4


def test_channel_ids_are_unique_and_resource_id_is_shared(
    google: GoogleSandbox, webhook: WebhookReceiver
):
    api = google.api(google.access(ADA))
    first = _watch(api, webhook, "chan-a").json()
    duplicate = _watch(api, webhook, "chan-a")
    assert duplicate.status_code == 400
    assert duplicate.json()["error"]["errors"][0]["reason"] == "channelIdNotUnique"
    second = _watch(api, webhook, "chan-b").json()
    assert second["resourceId"] == first["resourceId"]
    too_long = _watch(api, webhook, "c" * 65)
    assert too_long.status_code == 400
    long_token = _watch(api, webhook, "chan-c", token="t" * 257)
    assert long_token.status_code == 400


def test_https_required_unless_allowed(google: GoogleSandbox, webhook: WebhookReceiver):
    api = google.api(google.access(ADA))
    google.control("PATCH", "config", json={"allow_http_webhooks": False})
    refused = _watch(api, webhook)
    assert refused.status_code == 400
    assert refused.json()["error"]["errors"][0] == {
        "domain": "global",
        "reason": "push.webhookUrlNotHttps",
        "message": f"WebHook callback must be HTTPS: {webhook.url}",
    }


def test_requested_expiration_and_ttl_take_the_more_restrictive(
    google: GoogleSandbox, webhook: WebhookReceiver
):
    api = google.api(google.access(ADA))
    now_ms = google.state.clock.now_ms()
    soon = _watch(api, webhook, "chan-exp", expiration=str(now_ms + 3_600_000)).json()
    assert int(soon["expiration"]) == now_ms + 3_600_000
    ttl = _watch(api, webhook, "chan-ttl", params={"ttl": "60"}).json()
    assert int(ttl["expiration"]) - now_ms <= 61_000
    late = _watch(
        api, webhook, "chan-late", expiration=str(now_ms + 30 * 86_400_000)
    ).json()
    assert int(late["expiration"]) - now_ms <= 604_800_000 + 60_000


def test_stop_ends_deliveries_and_unknown_channel_is_404(
    google: GoogleSandbox, webhook: WebhookReceiver
):
    api = google.api(google.access(ADA))
    channel = _watch(api, webhook).json()
    webhook.wait_for(1)
    stopped = api.post(
        "calendar/v3/channels/stop",
        json={"id": channel["id"], "resourceId": channel["resourceId"]},
    )
    assert stopped.status_code == 204
    api.post(EVENTS, json=EVENT)
    unknown = api.post(
        "calendar/v3/channels/stop",
        json={"id": "nope", "resourceId": channel["resourceId"]},
    )
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"].startswith(
        "Channel 'nope' not found for project '"
    )
    notifications = google.control("GET", "notifications").json()["notifications"]
    assert [n["resourceState"] for n in notifications] == ["sync"]


def test_retries_on_503_and_gives_up_on_404(
    google: GoogleSandbox, webhook: WebhookReceiver
):
    api = google.api(google.access(ADA))
    webhook.statuses = [503, 500, 200]
    _watch(api, webhook)
    received = webhook.wait_for(3)
    assert [n.headers["x-goog-message-number"] for n in received] == ["1", "1", "1"]
    delivery = wait_until(
        lambda: next(
            (
                n
                for n in google.control("GET", "notifications").json()["notifications"]
                if n["outcome"] != "pending"
            ),
            None,
        )
    )
    assert (delivery["outcome"], delivery["attempts"]) == ("delivered", 3)
    webhook.statuses = [404]
    api.post(EVENTS, json=EVENT)
    failed = wait_until(
        lambda: [
            n
            for n in google.control("GET", "notifications").json()["notifications"]
            if n["outcome"] == "failed"
        ]
    )
    assert failed[0]["attempts"] == 1
    assert failed[0]["status"] == 404


def test_expired_sync_token_fails_the_watch_like_list(
    google: GoogleSandbox, webhook: WebhookReceiver
):
    api = google.api(google.access(ADA))
    token = api.get(EVENTS).json()["nextSyncToken"]
    google.control("POST", f"calendars/{ADA}/expire-sync-tokens")
    response = api.post(
        f"{EVENTS}/watch",
        params={"syncToken": token},
        json={"id": "chan-sync", "type": "web_hook", "address": webhook.url},
    )
    assert response.status_code == 410


def test_dropped_notification_fault(google: GoogleSandbox, webhook: WebhookReceiver):
    api = google.api(google.access(ADA))
    _watch(api, webhook)
    webhook.wait_for(1)
    google.add_fault(kind="drop_notification", user=ADA, count=1)
    api.post(EVENTS, json=EVENT)
    api.post(EVENTS, json=EVENT)
    received = webhook.wait_for(2)
    assert [n.headers["x-goog-resource-state"] for n in received] == ["sync", "exists"]
    outcomes = [
        n["outcome"]
        for n in google.control("GET", "notifications").json()["notifications"]
    ]
    assert outcomes[:2] == ["delivered", "dropped"]
