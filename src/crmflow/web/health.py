"""``/healthz``, ``/readyz`` and ``/metrics``: for supervisors, load balancers
and Prometheus.

=================  =================================================================
``GET /healthz``   liveness: the process serves requests (200, touches nothing else)
``GET /readyz``    readiness: the database answers and holds crmflow's tables, within
                   :data:`READY_TIMEOUT_S`; 200 ``{"status": "ready", ...}`` or 503 with
                   the failed check and what to do
``GET /metrics``   Prometheus text format (:mod:`crmflow.metrics`); the schedule's
                   gauges are read from the database at each scrape
=================  =================================================================

None needs signing in, and none says more than it must: no URL, host, user
name or error text of the database appears in an answer (those go to the
log), and metrics carry counts by kind, provider and status, never an
account, a user or an address. Expose ``/metrics`` to the monitoring network
only, as usual for Prometheus endpoints.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from crmflow.bootstrap import Services
from crmflow.metrics import DUE_ACCOUNTS, FAILING_ACCOUNTS, SYNC_LAG
from crmflow.store.schedule import ScheduleStore

router = APIRouter(tags=["operations"])
_log = logging.getLogger(__name__)

#: the longest a readiness check may take, in seconds
READY_TIMEOUT_S = 3.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and serving requests."""
    return {"status": "ok"}


async def _schema_present(services: Services) -> None:
    # any table of the first migration; on PostgreSQL's application role row
    # level security hides every row, which is fine: the query must only work
    async with services.db.admin() as session:
        await session.execute(text("SELECT 1 FROM organizations LIMIT 1"))


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """The app can serve users: its database answers and is migrated."""
    services: Services = request.app.state.services
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(_schema_present(services), READY_TIMEOUT_S)
    except TimeoutError:
        checks["database"] = (
            f"no answer within {READY_TIMEOUT_S:g} s; check that the database "
            "server runs and is reachable"
        )
    except Exception as exc:  # any failure means "not ready"
        _log.warning("readiness check failed: %s", type(exc).__name__, exc_info=exc)
        checks["database"] = (
            "the database refused the check; check the connection settings and "
            "run 'crmflow db upgrade'"
        )
    else:
        checks["database"] = "ok"
    ready = all(value == "ok" for value in checks.values())
    body: dict[str, Any] = {
        "status": "ready" if ready else "not ready",
        "checks": checks,
    }
    return JSONResponse(body, status_code=200 if ready else 503)


async def _schedule_gauges(services: Services) -> None:
    async with services.system_db.admin() as session:
        stats = await ScheduleStore(session).stats(dt.datetime.now(dt.UTC))
    DUE_ACCOUNTS.set(stats.due)
    SYNC_LAG.set(stats.lag_s)
    FAILING_ACCOUNTS.set(stats.failing)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """This process's metrics, with the schedule's gauges read just now."""
    services: Services = request.app.state.services
    try:
        await asyncio.wait_for(_schedule_gauges(services), READY_TIMEOUT_S)
    except Exception as exc:  # the counters are still worth a scrape
        _log.warning("schedule gauges not updated: %s", type(exc).__name__)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
