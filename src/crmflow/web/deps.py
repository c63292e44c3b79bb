"""FastAPI dependencies: the services, and the tenant of an API request."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from crmflow.bootstrap import Services
from crmflow.domain.tenancy import TenantContext
from crmflow.store.identity import authenticate_api_token

_bearer = HTTPBearer(
    auto_error=False,
    description="A personal API token (Settings -> API tokens, or POST /api/tokens).",
)


def get_services(request: Request) -> Services:
    """The process's services (set up in the app's lifespan)."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def api_tenant(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> TenantContext:
    """The tenant a Bearer token acts as.

    Raises:
        HTTPException: 401 with ``WWW-Authenticate: Bearer`` when the token is
            missing, unknown, revoked or expired.
    """
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status_code=401,
            detail="Send a personal API token as 'Authorization: Bearer <token>'.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    ctx = await authenticate_api_token(services.db, credentials.credentials)
    if ctx is None:
        raise HTTPException(
            status_code=401,
            detail="This API token is unknown, revoked or expired; create a new one in Settings.",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return ctx


TenantDep = Annotated[TenantContext, Depends(api_tenant)]
