"""One retry policy for every provider API call: rate limits and passing faults.

:class:`RetryTransport` wraps the httpx transport the adapters use (Google
Calendar and Gmail, Microsoft Graph, CalDAV). A request is tried again when the
provider said "not now":

* 429, and 403 whose Google error reason is ``rateLimitExceeded`` or
  ``userRateLimitExceeded`` (the request was refused, not carried out): any
  method;
* 500, 502, 503, 504, a timeout or a dropped connection: only idempotent
  methods (GET, HEAD, OPTIONS, PUT, DELETE, and WebDAV's PROPFIND and
  REPORT), because a POST that failed
  half-way may have been carried out (an email sent twice is worse than a
  sync that runs again later); a connection that could not even be opened
  is retried for every method (nothing was sent).

The pause is the provider's ``Retry-After`` when it sends one (fractional
seconds too), else exponential back-off with full jitter: a random pause up to
``base_delay_s * 2**(attempt-1)``, capped at ``max_delay_s``. After
``max_attempts`` tries, or when ``Retry-After`` asks for longer than
``max_delay_s``, the last answer goes back to the adapter, which raises
``RateLimited`` / ``TransientProviderError``: the job fails visibly (the
sync log, the account's last error, the schedule's back-off) instead of
holding a worker in a long or hot loop.

Per-user concurrency: requests under a configured URL prefix (Microsoft
Graph: at most 4 concurrent requests per mailbox) wait for a slot keyed by
the request's credentials. The key is a SHA-256 of the Authorization header,
so no token is kept in memory beyond the request.

Clients come and go per call (``providers._http.new_client``): each gets
:meth:`RetryTransport.for_client`, which shares the policy and the per-user
slots and has a connection pool of its own, closed with the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email.utils
import functools
import hashlib
import json
import random
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import httpx

__all__ = ["RetryPolicy", "RetryTransport", "parse_retry_after", "retry_after_s"]


def retry_after_s(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (delta-seconds, fractional allowed, or an HTTP date)."""
    return parse_retry_after(response.headers.get("Retry-After"))


def parse_retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` header value in seconds from now (None: absent or
    unreadable)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


#: methods that may be sent again after a failure half-way (WebDAV's
#: PROPFIND and REPORT only read)
IDEMPOTENT = frozenset(
    {"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "PROPFIND", "REPORT"}
)
#: statuses that mean "try again later" for idempotent requests
TRANSIENT = frozenset({500, 502, 503, 504})
#: Google's 403 reasons that are rate limits, not refusals
RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long provider calls are retried."""

    #: tries in all, the first included
    max_attempts: int = 4
    #: the first back-off pause's upper bound, in seconds (doubles per try)
    base_delay_s: float = 0.5
    #: the longest single pause; a longer Retry-After is left to the job
    max_delay_s: float = 30.0
    #: URL prefix -> concurrent requests allowed per user (credentials)
    per_user_limits: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay_s < 0 or self.max_delay_s < 0:
            raise ValueError("delays cannot be negative")
        if any(limit < 1 for limit in self.per_user_limits.values()):
            raise ValueError("a per-user limit must be at least 1")


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """The TLS settings of every provider connection (the system's CA store
    as httpx sets it up), made once: building a context reads the whole CA
    bundle, about 20 ms, which a client per sync run would otherwise pay."""
    return httpx.create_ssl_context()


def _is_rate_limit_403(response: httpx.Response) -> bool:
    try:
        body = json.loads(response.content)
    except ValueError:
        return False
    error = body.get("error") if isinstance(body, dict) else None
    items = error.get("errors") if isinstance(error, dict) else None
    if not isinstance(items, list):
        return False
    return any(
        isinstance(item, dict) and item.get("reason") in RATE_LIMIT_REASONS
        for item in items
    )


@dataclass(slots=True)
class _Slot:
    """One user's concurrency limit under one URL prefix, and who uses it."""

    semaphore: asyncio.Semaphore
    users: int = 0


class RetryTransport(httpx.AsyncBaseTransport):
    """An httpx transport that applies a :class:`RetryPolicy` (see the module)."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport | None,
        policy: RetryPolicy,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        """
        Args:
            inner: the transport that sends (None: the network, with one pool).
            sleep: the pause between tries (tests record it).
            rand: a number in [0, 1) for the jitter.
        """
        self._inner = inner if inner is not None else httpx.AsyncHTTPTransport()
        self._own_inner = inner is None
        self.policy = policy
        self._sleep = sleep
        self._rand = rand
        self._slots: dict[tuple[str, str], _Slot] = {}

    def backoff_s(self, attempt: int) -> float:
        """The pause after the ``attempt``-th failed try, without Retry-After."""
        ceiling = self.policy.base_delay_s * float(2 ** min(attempt - 1, 30))
        return min(self.policy.max_delay_s, ceiling) * self._rand()

    @contextlib.asynccontextmanager
    async def _slot(self, request: httpx.Request) -> AsyncIterator[None]:
        url = str(request.url)
        prefix = next(
            (p for p in self.policy.per_user_limits if url.startswith(p)), None
        )
        credentials = request.headers.get("authorization")
        if prefix is None or credentials is None:
            yield
            return
        key = (prefix, hashlib.sha256(credentials.encode()).hexdigest())
        slot = self._slots.get(key)
        if slot is None:
            slot = _Slot(asyncio.Semaphore(self.policy.per_user_limits[prefix]))
            self._slots[key] = slot
        slot.users += 1
        try:
            async with slot.semaphore:
                yield
        finally:
            slot.users -= 1
            if not slot.users:  # tokens change: forget idle credentials
                del self._slots[key]

    async def _retryable(
        self, request: httpx.Request, response: httpx.Response
    ) -> bool:
        status = response.status_code
        if status == 429:
            return True
        if status == 403:
            await response.aread()  # a small JSON error: which 403 is it?
            return _is_rate_limit_403(response)
        return status in TRANSIENT and request.method in IDEMPOTENT

    def for_client(
        self, *, verify: ssl.SSLContext | None = None
    ) -> httpx.AsyncBaseTransport:
        """A transport for one client: this policy (and its per-user slots),
        with a connection pool of the client's own when this one has no inner
        transport, closed when the client closes.

        Args:
            verify: the TLS settings of that pool (a CalDAV server's extra CA
                file); None: the shared system trust. An inner transport
                passed in at construction keeps its own.
        """
        if self._own_inner:
            return _ClientTransport(
                self,
                httpx.AsyncHTTPTransport(verify=verify or shared_ssl_context()),
                own=True,
            )
        return _ClientTransport(self, self._inner, own=False)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.send(request, self._inner)

    async def send(
        self, request: httpx.Request, inner: httpx.AsyncBaseTransport
    ) -> httpx.Response:
        """Send ``request`` through ``inner`` under the policy."""
        attempt = 0
        while True:
            attempt += 1
            last = attempt >= self.policy.max_attempts
            try:
                async with self._slot(request):
                    response = await inner.handle_async_request(request)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                if last:
                    raise
                await self._sleep(self.backoff_s(attempt))
                continue
            except (
                httpx.TimeoutException,
                httpx.NetworkError,
                httpx.RemoteProtocolError,
            ):
                if last or request.method not in IDEMPOTENT:
                    raise
                await self._sleep(self.backoff_s(attempt))
                continue
            if last or not await self._retryable(request, response):
                return response
            asked = retry_after_s(response)
            if asked is not None and asked > self.policy.max_delay_s:
                return response  # longer than a worker should wait: the job backs off
            await response.aclose()
            await self._sleep(asked if asked is not None else self.backoff_s(attempt))

    async def aclose(self) -> None:
        # a shared inner transport belongs to whoever passed it in; the pool
        # made for no inner is only used through for_client()
        if self._own_inner:
            await self._inner.aclose()


class _ClientTransport(httpx.AsyncBaseTransport):
    """One client's view of a :class:`RetryTransport`."""

    def __init__(
        self, retry: RetryTransport, inner: httpx.AsyncBaseTransport, *, own: bool
    ) -> None:
        self._retry = retry
        self._inner = inner
        self._own = own

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._retry.send(request, self._inner)

    async def aclose(self) -> None:
        if self._own:
            await self._inner.aclose()
