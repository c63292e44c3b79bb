"""``/healthz`` and ``/readyz``: probes for process supervisors and load balancers.

=================  =================================================================
``GET /healthz``   liveness: the process serves requests (200, touches nothing else)
``GET /readyz``    readiness: the database answers and holds crmflow's tables, within
                   :data:`READY_TIMEOUT_S`; 200 ``{"status": "ready", ...}`` or 503 with
                   the failed check and what to do
=================  =================================================================

Neither needs signing in, and neither says more than a probe needs: no URL,
host, user name or error text of the database appears in an answer (those go
to the log), so a public probe endpoint leaks nothing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from crmflow.bootstrap import Services

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
