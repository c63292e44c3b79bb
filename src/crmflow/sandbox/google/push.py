"""Calendar push notifications: watch channels and webhook delivery.

Rules (Calendar push guide; google-apis.md §4, checklist 17-21):

* ``events.watch`` body: ``id`` (required, unique within the project, ≤ 64
  chars; reuse -> 400 ``channelIdNotUnique`` [OBS]), ``type`` ``web_hook``,
  ``address`` (HTTPS; plain HTTP only when the sandbox config allows it),
  ``token`` (≤ 256 chars), ``expiration`` (Unix ms) or ``params.ttl``
  (default 604800 s); the more restrictive expiry wins.
* All channels on one collection share one ``resourceId`` [OBS].
* After a watch the channel first gets ``sync`` (message number 1) —
  possibly before the watch response — then ``exists`` for every change
  (deletions included), with increasing but non-contiguous message numbers.
* Notifications are POSTs with no body, ``User-Agent: APIs-Google`` and the
  ``X-Goog-*`` headers; ``X-Goog-Channel-Expiration`` is RFC 1123.
* 200/201/202/204/102 count as delivered; 500/502/503/504 are retried with
  exponential backoff; anything else is a failure.
* ``channels.stop`` on an unknown channel -> 404 "Channel '<id>' not found for
  project '<number>'" [OBS].

Each channel has its own asyncio queue and worker on the server's event loop,
so its messages arrive strictly in order. Changes made from other threads (the
demo seeder, tests) are handed to the loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import httpx

from crmflow.sandbox.faults import FaultKind
from crmflow.sandbox.google import errors
from crmflow.sandbox.google.errors import GoogleApiError
from crmflow.sandbox.state import SandboxState

__all__ = ["Channel", "Delivery", "PushData", "PushDispatcher", "resource_id_for"]

#: "Default is 604800 seconds" (params.ttl); also the sandbox's maximum
DEFAULT_TTL_S = 604_800
MAX_CHANNEL_ID = 64
MAX_TOKEN = 256
_DELIVERED = frozenset({102, 200, 201, 202, 204})
_RETRIED = frozenset({500, 502, 503, 504})


@dataclass
class Channel:
    """A watch channel."""

    id: str
    client_id: str
    email: str
    calendar_id: str
    resource_id: str
    resource_uri: str
    token: str | None
    address: str
    expiration_ms: int
    params: dict[str, str] = field(default_factory=dict)
    #: last message number used (sync is 1)
    message_number: int = 0
    stopped: bool = False

    def key(self) -> str:
        """Channel ids are unique per project (OAuth client)."""
        return f"{self.client_id} {self.id}"

    def as_json(self) -> dict[str, Any]:
        """The ``Channel`` returned by events.watch."""
        out: dict[str, Any] = {
            "kind": "api#channel",
            "id": self.id,
            "resourceId": self.resource_id,
            "resourceUri": self.resource_uri,
        }
        if self.token is not None:
            out["token"] = self.token
        out["expiration"] = str(self.expiration_ms)
        return out


@dataclass
class Delivery:
    """One notification and what became of it."""

    channel_id: str
    resource_state: str
    message_number: int
    address: str
    attempts: int = 0
    #: last HTTP status from the receiver (None: no answer)
    status: int | None = None
    #: pending | delivered | failed | dropped
    outcome: str = "pending"
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        """Control-API form."""
        return {
            "channelId": self.channel_id,
            "resourceState": self.resource_state,
            "messageNumber": self.message_number,
            "address": self.address,
            "attempts": self.attempts,
            "status": self.status,
            "outcome": self.outcome,
            "error": self.error,
        }


@dataclass
class PushData:
    """Persisted channels."""

    channels: dict[str, Channel] = field(default_factory=dict)


def resource_id_for(calendar_id: str) -> str:
    """The stable, opaque id of a calendar's events collection."""
    digest = hashlib.sha256(f"events:{calendar_id}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()[:27]


def project_number(client_id: str) -> str:
    """Google client ids start with the project number (``123-abc.apps...``)."""
    head = client_id.split("-", 1)[0]
    return head if head.isdigit() else "0"


class PushDispatcher:
    """Creates channels and delivers their notifications. Runtime-only."""

    def __init__(self, state: SandboxState, data: PushData) -> None:
        self.state = state
        self.data = data
        self.deliveries: deque[Delivery] = deque(maxlen=10_000)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queues: dict[str, asyncio.Queue[tuple[Delivery, dict[str, str]]]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._client: httpx.AsyncClient | None = None

    # -- channels (state lock held) -----------------------------------------------------

    def create(
        self,
        raw: dict[str, Any],
        *,
        client_id: str,
        email: str,
        calendar_id: str,
        resource_uri: str,
        now_ms: int,
    ) -> Channel:
        """Validate a watch body and register the channel.

        Raises:
            GoogleApiError: 400 for a missing/long id, non-unique id, bad type,
                non-HTTPS address, long token.
        """
        channel_id = raw.get("id")
        if not isinstance(channel_id, str) or not channel_id:
            raise errors.bad_request(
                "Required", flavor="classic", reason="required", location="id"
            )
        if len(channel_id) > MAX_CHANNEL_ID:
            raise errors.invalid_value(
                f"Invalid channel id: {channel_id}", flavor="classic"
            )
        if raw.get("type") not in ("web_hook", "webhook"):
            raise errors.invalid_value(
                f"Invalid value for: type: {raw.get('type')}", flavor="classic"
            )
        address = raw.get("address")
        if not isinstance(address, str) or not address:
            raise errors.bad_request(
                "Required", flavor="classic", reason="required", location="address"
            )
        if not address.startswith("https://") and not (
            self.state.config.allow_http_webhooks and address.startswith("http://")
        ):
            raise errors.error(
                400,
                "push.webhookUrlNotHttps",
                f"WebHook callback must be HTTPS: {address}",
                flavor="classic",
            )
        token = raw.get("token")
        if token is not None and (not isinstance(token, str) or len(token) > MAX_TOKEN):
            raise errors.invalid_value("Invalid channel token.", flavor="classic")
        key = f"{client_id} {channel_id}"
        if key in self.data.channels:
            raise errors.error(
                400,
                "channelIdNotUnique",
                f"Channel id {channel_id} not unique",
                flavor="classic",
            )
        limit = now_ms + DEFAULT_TTL_S * 1000
        params = {str(k): str(v) for k, v in (raw.get("params") or {}).items()}
        candidates = [limit]
        if params.get("ttl", "").isdigit():
            candidates.append(now_ms + int(params["ttl"]) * 1000)
        expiration = raw.get("expiration")
        if expiration is not None:
            try:
                candidates.append(int(expiration))
            except (TypeError, ValueError) as exc:
                raise errors.invalid_value(
                    "Invalid expiration.", flavor="classic"
                ) from exc
        channel = Channel(
            id=channel_id,
            client_id=client_id,
            email=email,
            calendar_id=calendar_id,
            resource_id=resource_id_for(calendar_id),
            resource_uri=resource_uri,
            token=token,
            address=address,
            # "the more restrictive value is used"
            expiration_ms=min(candidates),
            params=params,
        )
        self.data.channels[key] = channel
        self.state.mark_dirty()
        return channel

    def stop(self, raw: dict[str, Any], *, client_id: str, email: str) -> None:
        """channels.stop. Raises 404 for unknown channels (or another user's)."""
        channel_id = str(raw.get("id") or "")
        channel = self.data.channels.get(f"{client_id} {channel_id}")
        if (
            channel is None
            or channel.stopped
            or channel.email != email
            or (
                raw.get("resourceId") is not None
                and raw.get("resourceId") != channel.resource_id
            )
        ):
            raise GoogleApiError(
                code=404,
                message=f"Channel '{channel_id}' not found for project '{project_number(client_id)}'",
                errors=[
                    {
                        "domain": "global",
                        "reason": "notFound",
                        "message": f"Channel '{channel_id}' not found for project '{project_number(client_id)}'",
                    }
                ],
            )
        channel.stopped = True
        self.state.mark_dirty()

    def calendar_changed(self, calendar_id: str, now_ms: int) -> None:
        """Queue ``exists`` on every live channel watching ``calendar_id``."""
        for channel in self.data.channels.values():
            if (
                channel.calendar_id == calendar_id
                and not channel.stopped
                and channel.expiration_ms > now_ms
            ):
                self._enqueue(channel, "exists")

    def announce(self, channel: Channel) -> None:
        """Queue the initial ``sync`` message of a new channel."""
        self._enqueue(channel, "sync")

    def _enqueue(self, channel: Channel, resource_state: str) -> None:
        if resource_state == "sync":
            channel.message_number = 1
        else:
            # "Message numbers increase ... but they're not sequential."
            channel.message_number += self.state.faults.random_int(1, 9)
        delivery = Delivery(
            channel.id, resource_state, channel.message_number, channel.address
        )
        self.deliveries.append(delivery)
        dropped = self.state.faults.draw(
            {FaultKind.DROP_NOTIFICATION},
            user=channel.email,
            api="calendar",
            method="push",
        )
        if dropped:
            delivery.outcome = "dropped"
            return
        loop = self._loop
        if loop is None or loop.is_closed():
            delivery.outcome = "failed"
            delivery.error = "sandbox server not running"
            return
        key = channel.key()
        headers = self._headers(channel, resource_state, delivery.message_number)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._put(key, delivery, headers)
        else:
            loop.call_soon_threadsafe(self._put, key, delivery, headers)

    @staticmethod
    def _headers(channel: Channel, resource_state: str, number: int) -> dict[str, str]:
        headers = {
            "User-Agent": "APIs-Google",
            "X-Goog-Channel-ID": channel.id,
            "X-Goog-Message-Number": str(number),
            "X-Goog-Resource-ID": channel.resource_id,
            "X-Goog-Resource-State": resource_state,
            "X-Goog-Resource-URI": channel.resource_uri,
            "X-Goog-Channel-Expiration": format_datetime(
                datetime.fromtimestamp(channel.expiration_ms / 1000, UTC), usegmt=True
            ),
        }
        if channel.token is not None:
            headers["X-Goog-Channel-Token"] = channel.token
        return headers

    # -- delivery (event loop) -------------------------------------------------------------

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver on ``loop`` (the server's). Called on each API request; cheap."""
        if self._loop is not loop:
            self._loop = loop
            self._queues.clear()
            self._tasks.clear()
            self._client = None

    def _put(self, key: str, delivery: Delivery, headers: dict[str, str]) -> None:
        queue = self._queues.get(key)
        if queue is None:
            queue = asyncio.Queue()
            self._queues[key] = queue
            self._tasks[key] = asyncio.get_running_loop().create_task(
                self._worker(queue)
            )
        queue.put_nowait((delivery, headers))

    async def _worker(
        self, queue: asyncio.Queue[tuple[Delivery, dict[str, str]]]
    ) -> None:
        while True:
            delivery, headers = await queue.get()
            await self._deliver(delivery, headers)

    async def _deliver(self, delivery: Delivery, headers: dict[str, str]) -> None:
        config = self.state.config
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=config.push_timeout_s)
        delay = config.push_retry_base_s
        for attempt in range(1, config.push_max_attempts + 1):
            delivery.attempts = attempt
            retry = False
            try:
                response = await self._client.post(
                    delivery.address, headers=headers, content=b""
                )
            except httpx.HTTPError as exc:
                delivery.status = None
                delivery.error = type(exc).__name__
                retry = True
            else:
                delivery.status = response.status_code
                if response.status_code in _DELIVERED:
                    delivery.outcome = "delivered"
                    delivery.error = None
                    return
                retry = response.status_code in _RETRIED
            if not retry:
                break
            if attempt < config.push_max_attempts:
                await asyncio.sleep(delay)
                delay *= 2
        delivery.outcome = "failed"

    async def aclose(self) -> None:
        """Stop the workers and close the HTTP client (server shutdown)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._queues.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
