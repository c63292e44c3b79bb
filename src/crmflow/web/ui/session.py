"""Who is signed in to the UI: the session cookie and the viewer of a request.

The session is Starlette's signed cookie (``crmflow_session``; HttpOnly,
``SameSite=Lax``, ``Secure`` behind https; see ``web/app.py``). It holds only
ids and the CSRF token, never a secret: ``user_id``, ``org_id`` (the
organization the user acts in), ``csrf`` and one-time flash messages.

Every request re-checks the session against the database
(:func:`~crmflow.store.identity.enter_organization` and
:func:`~crmflow.store.identity.get_user`): a deactivated user, or one removed
from the organization, is signed out at the next click instead of acting on a
stale cookie.

Public surface: :func:`sign_in`, :func:`sign_out`, :class:`Viewer`,
:func:`current_viewer` / :data:`ViewerDep` and :func:`ui_tenant` /
:data:`UiTenantDep` (FastAPI dependencies that redirect to ``/login`` when
nobody is signed in), :func:`safe_next`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request

from crmflow.domain import crm
from crmflow.domain.tenancy import TenantContext
from crmflow.errors import NotFound
from crmflow.store.identity import enter_organization, get_user, organizations_of
from crmflow.web.deps import ServicesDep
from crmflow.web.ui.csrf import rotate_csrf_token
from crmflow.web.ui.pages import flash

USER_KEY = "user_id"
ORG_KEY = "org_id"
#: the user's session epoch at sign-in; a newer epoch in the database (password
#: changed, "sign out everywhere") invalidates this cookie
EPOCH_KEY = "epoch"
#: where a signed-in user lands by default
HOME = "/appointments"


def sign_in(request: Request, ctx: TenantContext, epoch: int) -> None:
    """Start a fresh session for ``ctx`` (the old one, if any, is discarded)."""
    request.session.clear()
    request.session[USER_KEY] = str(ctx.user_id)
    request.session[ORG_KEY] = str(ctx.organization_id)
    request.session[EPOCH_KEY] = epoch
    rotate_csrf_token(request)


def sign_out(request: Request) -> None:
    """Forget everything in the session (the cookie is expired in the response)."""
    request.session.clear()


def safe_next(target: str | None) -> str:
    """``target`` if it is a path on this site, else :data:`HOME`.

    Rejects absolute and scheme-relative URLs (``//evil.example``, ``/\\evil``)
    so the sign-in form cannot be used as an open redirect.
    """
    if (
        not target
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or any(ord(c) < 0x20 for c in target)
    ):
        return HOME
    return target


def _sign_in_required(request: Request) -> HTTPException:
    target = "/login"
    if request.method == "GET":
        path = request.url.path
        if request.url.query:
            path += "?" + request.url.query
        if path != HOME:
            target += "?next=" + quote(path, safe="")
    return HTTPException(status_code=303, headers={"Location": target})


def _uuid(value: object) -> uuid.UUID | None:
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Viewer:
    """The signed-in user of a request, and where they act."""

    #: the tenant every repository call of the request runs as
    ctx: TenantContext
    user: crm.UserAccount
    #: every organization the user belongs to (for the switcher), by name
    organizations: tuple[crm.Organization, ...]

    @property
    def organization(self) -> crm.Organization:
        """The organization the user acts in."""
        return next(o for o in self.organizations if o.id == self.ctx.organization_id)


async def current_viewer(request: Request, services: ServicesDep) -> Viewer:
    """The signed-in user, verified against the database.

    Raises:
        HTTPException: 303 to ``/login`` (with ``next`` for GET requests) when
            nobody is signed in, or the session's user or membership is gone.
    """
    user_id = _uuid(request.session.get(USER_KEY))
    org_id = _uuid(request.session.get(ORG_KEY))
    if user_id is None or org_id is None:
        raise _sign_in_required(request)
    try:
        ctx = await enter_organization(services.db, user_id, org_id)
        user = await get_user(services.db, user_id)
        organizations = tuple(await organizations_of(services.db, user_id))
        if not any(o.id == ctx.organization_id for o in organizations):
            raise NotFound()  # the membership ended between the two lookups
    except NotFound:
        sign_out(request)
        flash(
            request,
            "Your account or your membership of that organization has ended; "
            "sign in again.",
            "error",
        )
        raise _sign_in_required(request) from None
    if request.session.get(EPOCH_KEY) != user.session_epoch:
        sign_out(request)
        flash(
            request,
            "You were signed out because your password was changed or all your "
            "sessions were ended; sign in again.",
            "error",
        )
        raise _sign_in_required(request)
    return Viewer(ctx=ctx, user=user, organizations=organizations)


ViewerDep = Annotated[Viewer, Depends(current_viewer)]


async def ui_tenant(viewer: ViewerDep) -> TenantContext:
    """The tenant a UI request acts as (redirects to ``/login`` when signed out)."""
    return viewer.ctx


UiTenantDep = Annotated[TenantContext, Depends(ui_tenant)]
