"""The shared retry policy of provider API calls, on a scripted transport:
which answers are retried, how long it waits, when it gives up, and the
per-mailbox concurrency cap."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest

from crmflow.providers._retry import RetryPolicy, RetryTransport

URL = "https://graph.example.test/v1.0/me/messages"


class Script(httpx.AsyncBaseTransport):
    """Answers from a list (responses or exceptions), recording each request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.seen: list[tuple[str, bytes]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.method, await request.aread()))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _json(
    status: int, body: object, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(status, headers=headers, content=json.dumps(body).encode())


class Pauses:
    def __init__(self) -> None:
        self.taken: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.taken.append(seconds)


async def _send(
    script: Script,
    method: str = "GET",
    *,
    policy: RetryPolicy | None = None,
    rand: Callable[[], float] = lambda: 0.5,
) -> tuple[httpx.Response, list[float]]:
    pauses = Pauses()
    transport = RetryTransport(script, policy or RetryPolicy(), sleep=pauses, rand=rand)
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.request(method, URL, content=b'{"a": 1}')
    return response, pauses.taken


async def test_retry_after_is_honoured_to_the_fraction() -> None:
    script = Script(
        httpx.Response(429, headers={"Retry-After": "0.25"}), _json(200, {"ok": True})
    )
    response, pauses = await _send(script, "POST")
    assert response.status_code == 200
    assert pauses == [0.25]
    # the request went out again with its body
    assert script.seen == [("POST", b'{"a": 1}')] * 2


async def test_server_errors_back_off_exponentially_then_give_up() -> None:
    script = Script(*(httpx.Response(503) for _ in range(4)))
    response, pauses = await _send(script, rand=lambda: 0.999)
    assert response.status_code == 503  # the adapter turns it into an error
    assert len(script.seen) == 4  # max_attempts, not more
    assert pauses == pytest.approx([0.4995, 0.999, 1.998])


async def test_jitter_spreads_the_pauses() -> None:
    script = Script(httpx.Response(502), httpx.Response(200))
    _, low = await _send(script, rand=lambda: 0.0)
    assert low == [0.0]


async def test_a_failed_post_is_not_sent_again() -> None:
    script = Script(httpx.Response(503))
    response, pauses = await _send(script, "POST")
    assert (response.status_code, pauses, len(script.seen)) == (503, [], 1)
    dropped = Script(httpx.RemoteProtocolError("peer closed"))
    with pytest.raises(httpx.RemoteProtocolError):
        await _send(dropped, "POST")
    assert len(dropped.seen) == 1


async def test_a_connection_never_opened_is_retried_for_any_method() -> None:
    script = Script(httpx.ConnectError("refused"), httpx.Response(201))
    response, pauses = await _send(script, "POST")
    assert response.status_code == 201
    assert len(pauses) == 1
    timeout = Script(httpx.ReadTimeout("slow"), httpx.Response(200))
    assert (await _send(timeout, "GET"))[0].status_code == 200


@pytest.mark.parametrize(
    ("reason", "retried"),
    [
        ("rateLimitExceeded", True),
        ("userRateLimitExceeded", True),
        ("insufficientPermissions", False),
        ("forbidden", False),
    ],
)
async def test_google_403_is_retried_only_for_rate_limits(
    reason: str, retried: bool
) -> None:
    body = {"error": {"code": 403, "errors": [{"reason": reason}], "message": "x"}}
    script = Script(_json(403, body), _json(200, {}))
    response, _ = await _send(script, "POST")
    assert response.status_code == (200 if retried else 403)
    if not retried:
        assert response.json() == body  # the body is still there for the adapter


async def test_a_retry_after_longer_than_the_limit_is_left_to_the_job() -> None:
    script = Script(httpx.Response(429, headers={"Retry-After": "120"}))
    response, pauses = await _send(script, policy=RetryPolicy(max_delay_s=30))
    assert (response.status_code, pauses) == (429, [])
    assert response.headers["Retry-After"] == "120"


async def test_graph_mailboxes_get_four_requests_at_a_time_each() -> None:
    in_flight: dict[str, int] = {}
    most: dict[str, int] = {}

    async def answer(request: httpx.Request) -> httpx.Response:
        who = request.headers["authorization"]
        in_flight[who] = in_flight.get(who, 0) + 1
        most[who] = max(most.get(who, 0), in_flight[who])
        await asyncio.sleep(0.01)
        in_flight[who] -= 1
        return httpx.Response(200)

    policy = RetryPolicy(per_user_limits={"https://graph.example.test/": 4})
    transport = RetryTransport(httpx.MockTransport(answer), policy)
    async with httpx.AsyncClient(transport=transport) as client:
        await asyncio.gather(
            *(
                client.get(URL, headers={"Authorization": f"Bearer token-{n % 2}"})
                for n in range(20)
            ),
            *(
                client.get(
                    "https://other.example.test/x",
                    headers={"Authorization": "Bearer token-0"},
                )
                for _ in range(8)
            ),
        )
    assert most["Bearer token-1"] == 4
    # token-0's Graph calls were capped; its calls elsewhere were not, so the
    # peak across both hosts is higher than the cap
    assert most["Bearer token-0"] > 4
    assert not transport._slots


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"base_delay_s": -1}, {"per_user_limits": {"x": 0}}],
)
def test_bad_policies_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"must be|cannot be"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
