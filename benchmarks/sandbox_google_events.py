"""Benchmark: page through 10,000 sandbox Calendar events with maxResults=2500.

Run: ``.venv/bin/python benchmarks/sandbox_google_events.py [--events N] [--rounds R]``

Seeds N events (default 10,000) into one calendar through the sandbox's Python
API, serves the sandbox on a loopback port with uvicorn (as in the tests), and
then performs R full syncs (default 5) over real HTTP with httpx, each paging
with ``maxResults=2500`` until ``nextSyncToken`` — 4 requests per sync for 10,000
events — followed by one empty incremental sync. Prints requests/s, events/s
and total time. The sandbox must never be what limits crmflow's own sync
benchmarks.
"""

from __future__ import annotations

import argparse
import socket
import time

import httpx

from crmflow.sandbox.google.store import GoogleStore
from crmflow.sandbox.serve import SandboxServer
from crmflow.sandbox.state import SandboxState

USER = "bench@example.com"
SCOPE = "https://www.googleapis.com/auth/calendar.readonly"


def seed(state: SandboxState, count: int) -> float:
    """Insert ``count`` events; return the seconds it took."""
    started = time.perf_counter()
    state.add_user(USER)
    with state.lock:
        calendars = state.extension(GoogleStore).calendars
        cal = calendars.ensure_primary(USER)
        for i in range(count):
            day = 1 + i % 28
            calendars.insert(
                cal,
                {
                    "id": f"bench{i:08d}",
                    "summary": f"Benchmark event {i}",
                    "start": {"dateTime": f"2024-02-{day:02d}T09:00:00Z"},
                    "end": {"dateTime": f"2024-02-{day:02d}T10:00:00Z"},
                    "extendedProperties": {"private": {"crmId": str(i)}},
                },
                now_ms=state.clock.now_ms(),
            )
    return time.perf_counter() - started


def full_sync(http: httpx.Client) -> tuple[int, int, str]:
    """Page to the end; return (requests, events, nextSyncToken)."""
    requests = events = 0
    params: dict[str, str | int] = {"maxResults": 2500}
    while True:
        response = http.get("calendar/v3/calendars/primary/events", params=params)
        response.raise_for_status()
        body = response.json()
        requests += 1
        events += len(body["items"])
        if "nextPageToken" not in body:
            return requests, events, body["nextSyncToken"]
        params = {"maxResults": 2500, "pageToken": body["nextPageToken"]}


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    state = SandboxState()
    seed_s = seed(state, args.events)
    with SandboxServer(state) as server:
        token = httpx.post(
            server.google_url + "_sandbox/tokens",
            json={"email": USER, "scopes": [SCOPE]},
        ).json()["access_token"]
        transport = httpx.HTTPTransport(
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
        )
        with httpx.Client(
            base_url=server.google_url,
            headers={"Authorization": f"Bearer {token}"},
            transport=transport,
            timeout=120,
        ) as http:
            full_sync(http)  # warm-up (imports, connection)
            started = time.perf_counter()
            total_requests = total_events = 0
            sync_token = ""
            for _ in range(args.rounds):
                requests, events, sync_token = full_sync(http)
                assert events == args.events, events
                total_requests += requests
                total_events += events
            elapsed = time.perf_counter() - started
            incremental_started = time.perf_counter()
            delta = http.get(
                "calendar/v3/calendars/primary/events", params={"syncToken": sync_token}
            ).json()
            incremental_s = time.perf_counter() - incremental_started
            assert delta["items"] == []

    print(f"seeded {args.events} events in {seed_s:.2f} s (Python API)")
    print(
        f"{args.rounds} full syncs x {total_requests // args.rounds} pages of maxResults=2500: "
        f"{total_requests} requests, {total_events} events in {elapsed:.2f} s"
    )
    print(f"requests/s: {total_requests / elapsed:.1f}")
    print(f"events/s:   {total_events / elapsed:.0f}")
    print(f"one full sync of {args.events} events: {elapsed / args.rounds:.3f} s")
    print(f"empty incremental sync: {incremental_s * 1000:.1f} ms")


if __name__ == "__main__":
    main()
