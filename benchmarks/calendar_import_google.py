"""Benchmark: crmflow imports a 10,000-event Google calendar into SQLite.

Run: ``.venv/bin/python benchmarks/calendar_import_google.py [--events N]``

A child process seeds N events (default 10,000) into a sandbox user's primary
calendar and serves the sandbox on a loopback port, so the parent process holds
crmflow alone. The parent migrates a fresh SQLite database, provisions a user
with a Google calendar integration (a sandbox access token), adds the calendar
and runs the calendar sync service exactly as the API does:

* **initial import**: every event becomes an appointment (plus its mapping
  row); time, peak Python memory (tracemalloc) during the sync, and the
  process's peak resident memory during the sync (interpreter and libraries
  included; the peak is restarted before the sync, because the set-up hashed
  a password and argon2id holds 64 MiB for a moment);
* **incremental, 1 event changed** (through the sandbox's control API): time,
  and the provider requests the sandbox logged;
* **no change**: time and requests.

The goals the product set: initial import <= 3 s and <= 150 MB; 1 provider
request for the 1-change incremental sync.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import multiprocessing
import pstats
import resource
import tempfile
import time
import tracemalloc
from multiprocessing.connection import Connection
from pathlib import Path

import httpx

USER = "bench@example.com"
SCOPE = "https://www.googleapis.com/auth/calendar"


def serve_sandbox(events: int, pipe: Connection) -> None:
    """Child process: seed, serve, send the base URL, wait for "stop"."""
    from crmflow.sandbox.google.store import GoogleStore
    from crmflow.sandbox.serve import SandboxServer
    from crmflow.sandbox.state import SandboxState

    state = SandboxState()
    state.add_user(USER)
    with state.lock:
        calendars = state.extension(GoogleStore).calendars
        cal = calendars.ensure_primary(USER)
        for i in range(events):
            day = 1 + i % 28
            calendars.insert(
                cal,
                {
                    "id": f"bench{i:08d}",
                    "summary": f"Benchmark event {i}",
                    "description": "Quarterly review with the customer.",
                    "location": "Room 4",
                    "start": {
                        "dateTime": f"2026-02-{day:02d}T09:00:00",
                        "timeZone": "Europe/Berlin",
                    },
                    "end": {
                        "dateTime": f"2026-02-{day:02d}T10:00:00",
                        "timeZone": "Europe/Berlin",
                    },
                },
                now_ms=state.clock.now_ms(),
            )
    with SandboxServer(state) as server:
        pipe.send(server.google_url)
        pipe.recv()


def _resident_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (the peak) of this process, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak_resident() -> bool:
    """Start ``VmHWM`` again from the current resident size (Linux 4.0+:
    ``5`` to ``/proc/self/clear_refs``); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


async def run(
    google_url: str, events: int, *, trace_memory: bool, profile: bool
) -> None:
    """Parent process: crmflow on a fresh SQLite database."""
    from crmflow.bootstrap import start_services
    from crmflow.config import load_settings
    from crmflow.connections.service import Integrations
    from crmflow.domain.integrations import IntegrationKind, ProviderKey
    from crmflow.domain.secret import Secret
    from crmflow.domain.tenancy import Role
    from crmflow.services.calendar_sync import CalendarSync
    from crmflow.store.crypto import generate_key_entry
    from crmflow.store.db import Database
    from crmflow.store.identity import (
        enter_organization,
        provision_organization,
        provision_user,
    )
    from crmflow.store.integrations import IntegrationStore
    from crmflow.store.migrate import upgrade

    async with httpx.AsyncClient(base_url=google_url + "_sandbox/", timeout=60) as ctl:
        token = (
            await ctl.post("tokens", json={"email": USER, "scopes": [SCOPE]})
        ).json()["access_token"]
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp)}/crm.db"
            settings = load_settings(
                database_url=url,
                encryption_keys=generate_key_entry("bench"),
                session_secret="b" * 40,
                data_dir=Path(tmp),
                google_api_url=google_url,
                google_oauth2_url=google_url,
                google_accounts_url=google_url,
            )
            upgrade(url, url)
            admin = Database(url)
            org = await provision_organization(admin, "Bench")
            user = await provision_user(
                admin,
                "rep@bench.test",
                "bench-pw-123456",
                organization_id=org,
                role=Role.ADMIN,
            )
            await admin.dispose()
            services = await start_services(settings)
            ctx = await enter_organization(services.db, user, org)
            async with services.db.tenant(ctx) as session:
                integration = await IntegrationStore(session, services.vault).save(
                    ProviderKey.GOOGLE,
                    IntegrationKind.CALENDAR,
                    email=USER,
                    account_id="bench",
                    access_token=Secret(token),
                    refresh_token=None,
                    expires_at=None,
                    scopes=[SCOPE],
                )
            service = CalendarSync(Integrations(services.db, services.vault, settings))
            [primary] = [
                c for c in await service.calendars(ctx, integration) if c.primary
            ]
            account = await service.add_account(ctx, integration, primary.id)

            rss_before_mb = _resident_mb("VmRSS")
            # the peak from here on: set-up hashed a password (argon2id holds
            # 64 MiB for a moment), which a sync never does
            peak_reset = _reset_peak_resident()
            profiler = cProfile.Profile() if profile else None
            if trace_memory:
                tracemalloc.start()
            started = time.perf_counter()
            if profiler:
                profiler.enable()
            first = await service.sync(ctx, account.id)
            if profiler:
                profiler.disable()
            initial_s = time.perf_counter() - started
            peak = tracemalloc.get_traced_memory()[1] if trace_memory else 0
            tracemalloc.stop()
            if profiler:
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
            rss_mb = (
                _resident_mb("VmHWM")
                if peak_reset
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            )
            assert first.events_imported == events, first

            await ctl.patch(
                f"calendars/{USER}/events/bench00000042",
                json={"summary": "Changed in Google"},
            )
            logged = len((await ctl.get("requests")).json()["requests"])
            started = time.perf_counter()
            second = await service.sync(ctx, account.id)
            incremental_s = time.perf_counter() - started
            sent = (await ctl.get("requests")).json()["requests"][logged:]
            assert second.events_updated == 1, second

            logged += len(sent)
            started = time.perf_counter()
            third = await service.sync(ctx, account.id)
            quiet_s = time.perf_counter() - started
            quiet = (await ctl.get("requests")).json()["requests"][logged:]
            assert (third.events_updated, third.events_imported) == (0, 0)
            await services.close()

    print(
        f"initial import of {events} events into SQLite: {initial_s:.2f} s "
        f"({events / initial_s:,.0f} events/s)"
    )
    if trace_memory:
        print(
            f"  peak Python memory during the sync (tracemalloc): {peak / 2**20:.0f} MB"
        )
    during = "during the sync" if peak_reset else "since it started"
    print(
        f"  peak resident memory of the process {during}: {rss_mb:.0f} MB "
        f"({rss_before_mb:.0f} MB resident before the sync: interpreter, "
        f"libraries, set-up; the sync added {rss_mb - rss_before_mb:.0f} MB)"
    )
    print(
        f"incremental, 1 event changed: {incremental_s * 1000:.0f} ms, "
        f"{len(sent)} provider request(s): {[e['apiMethod'] for e in sent]}"
    )
    print(f"no change: {quiet_s * 1000:.0f} ms, {len(quiet)} provider request(s)")


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument(
        "--trace-memory",
        action="store_true",
        help="also measure peak Python memory with tracemalloc (slows the sync)",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the import")
    args = parser.parse_args()
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=serve_sandbox, args=(args.events, child), daemon=True
    )
    process.start()
    try:
        google_url = parent.recv()
        asyncio.run(
            run(
                google_url,
                args.events,
                trace_memory=args.trace_memory,
                profile=args.profile,
            )
        )
    finally:
        parent.send("stop")
        process.join(timeout=30)


if __name__ == "__main__":
    main()
