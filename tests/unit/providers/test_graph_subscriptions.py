"""The Graph subscription calls' contracts, on canned Graph answers (the
sandbox end-to-end tests in tests/jobs/test_graph_push.py are the evidence
that they work against Graph's protocol)."""

from __future__ import annotations

import datetime as dt
import json

import httpx
import pytest

from crmflow.domain.secret import Secret
from crmflow.providers import microsoft
from crmflow.providers.base import AuthError, ProviderError

ROOT = "https://graph.test/v1.0"
NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)


async def _token() -> Secret:
    return Secret("access")


def test_the_lifetime_stays_within_graphs_limit() -> None:
    week = dt.timedelta(days=7)
    asked = microsoft.lifetime_end(NOW, week)
    assert asked < NOW + microsoft.MAX_LIFETIME
    assert asked > NOW + dt.timedelta(days=6, hours=23)
    assert microsoft.lifetime_end(NOW, dt.timedelta(hours=2)) == NOW + dt.timedelta(
        hours=2
    )


async def test_create_sends_the_subscription_and_reads_the_answer() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = json.loads(request.content)
        return httpx.Response(
            201, json={"id": "sub-1", "expirationDateTime": body["expirationDateTime"]}
        )

    made = await microsoft.create_subscription(
        ROOT,
        _token,
        resource="me/messages",
        change_types="created,updated,deleted",
        notification_url="https://crm.test/webhooks/microsoft",
        lifecycle_url="https://crm.test/webhooks/microsoft",
        client_state=Secret("s" * 64),
        expires_at=NOW + dt.timedelta(days=2),
        transport=httpx.MockTransport(answer),
    )
    assert made == microsoft.GraphSubscription("sub-1", NOW + dt.timedelta(days=2))
    (request,) = seen
    assert (request.method, str(request.url)) == ("POST", ROOT + "/subscriptions")
    assert request.headers["Authorization"] == "Bearer access"
    body = json.loads(request.content)
    assert body["expirationDateTime"] == "2026-11-24T12:00:00.0000000Z"
    assert body["clientState"] == "s" * 64
    assert body["lifecycleNotificationUrl"] == "https://crm.test/webhooks/microsoft"


async def test_a_failed_validation_says_what_graph_said() -> None:
    message = (
        "Subscription validation request failed. Notification endpoint must "
        "respond with 200 OK to validation request."
    )

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            400, json={"error": {"code": "ValidationError", "message": message}}
        )

    with pytest.raises(ProviderError, match="validation request failed"):
        await microsoft.create_subscription(
            ROOT,
            _token,
            resource="me/messages",
            change_types="created",
            notification_url="https://crm.test/webhooks/microsoft",
            lifecycle_url="https://crm.test/webhooks/microsoft",
            client_state=Secret("state"),
            expires_at=NOW + dt.timedelta(days=2),
            transport=httpx.MockTransport(answer),
        )


@pytest.mark.parametrize(
    ("status", "expected"), [(404, None), (401, AuthError), (200, "renewed")]
)
async def test_renew(status: int, expected: object) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.method == "PATCH"
        assert str(request.url) == ROOT + "/subscriptions/sub-1"
        if status == 200:
            return httpx.Response(
                200, json={"id": "sub-1", "expirationDateTime": "2026-11-29T12:00:00Z"}
            )
        return httpx.Response(status, json={"error": {"code": "x", "message": "y"}})

    call = microsoft.renew_subscription(
        ROOT,
        _token,
        "sub-1",
        expires_at=NOW + dt.timedelta(days=7),
        transport=httpx.MockTransport(answer),
    )
    if expected is AuthError:
        with pytest.raises(AuthError):
            await call
    elif expected is None:
        assert await call is None
    else:
        renewed = await call
        assert renewed is not None
        assert renewed.expires_at == dt.datetime(2026, 11, 29, 12, tzinfo=dt.UTC)


@pytest.mark.parametrize(("status", "gone"), [(204, True), (404, False)])
async def test_delete(status: int, gone: bool) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(status))
    assert (
        await microsoft.delete_subscription(ROOT, _token, "sub-1", transport=transport)
        is gone
    )


async def test_an_unreadable_answer_is_a_provider_error() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(201, json={"id": 1}))
    with pytest.raises(ProviderError, match="unreadable"):
        await microsoft.create_subscription(
            ROOT,
            _token,
            resource="me/messages",
            change_types="created",
            notification_url="https://crm.test/w",
            lifecycle_url="https://crm.test/w",
            client_state=Secret("state"),
            expires_at=NOW + dt.timedelta(days=2),
            transport=transport,
        )
