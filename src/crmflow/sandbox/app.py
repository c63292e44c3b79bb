"""The sandbox's root ASGI app: every vendor under its own prefix.

``create_sandbox_app(state)`` serves Google under ``/google/`` (a Microsoft
sandbox will sit beside it under ``/microsoft/``), wraps everything in the
request log, and on shutdown stops push delivery and writes the state file.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp

from crmflow.sandbox._http import json_response
from crmflow.sandbox.google.app import create_google_app
from crmflow.sandbox.google.store import GoogleStore
from crmflow.sandbox.requestlog import RequestLogMiddleware
from crmflow.sandbox.state import SandboxState

__all__ = ["GOOGLE_PREFIX", "create_sandbox_app", "shutdown_sandbox"]

#: mount path of the Google sandbox
GOOGLE_PREFIX = "/google"


def create_sandbox_app(
    state: SandboxState,
    *,
    base_url: str | None = None,
    mounts: Mapping[str, ASGIApp] | None = None,
    on_shutdown: Sequence[Callable[[], Awaitable[None]]] = (),
) -> ASGIApp:
    """Build the sandbox app.

    Args:
        state: the sandbox state (shared with the control API and seeders).
        base_url: public root URL (``http://127.0.0.1:8765/``) when the app
            sits behind a proxy; None derives URLs from each request.
        mounts: further vendors by prefix (``{"/microsoft": app}``), served
            beside Google inside the same request log.
        on_shutdown: coroutines run at server shutdown (e.g. another
            vendor's delivery workers).

    Returns:
        An ASGI app: ``{root}google/...`` is Google; ``{root}`` lists the mounts.
    """
    google_base = (
        None if base_url is None else base_url.rstrip("/") + GOOGLE_PREFIX + "/"
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            for hook in on_shutdown:
                await hook()
            await shutdown_sandbox(state)

    async def index(request: Request) -> Response:
        root = (
            base_url.rstrip("/")
            if base_url
            else f"{request.url.scheme}://{request.url.netloc}"
        )
        listing = {"google": root + GOOGLE_PREFIX + "/"}
        listing.update({p.strip("/"): root + p.rstrip("/") + "/" for p in extra})
        return json_response(listing)

    extra = dict(mounts or {})
    app = Starlette(
        routes=[
            Route("/", index, methods=["GET"]),
            Mount(GOOGLE_PREFIX, app=create_google_app(state, base_url=google_base)),
            *(Mount(prefix, app=sub) for prefix, sub in extra.items()),
        ],
        lifespan=lifespan,
    )
    return RequestLogMiddleware(app, state.requests, after_write=state.flush)


async def shutdown_sandbox(state: SandboxState) -> None:
    """Stop push delivery and write the state file.

    The app's own lifespan does this; call it yourself when the sandbox app is
    mounted inside another Starlette/FastAPI app (``Mount`` does not forward
    lifespan events), e.g. from ``crmflow demo``'s shutdown.
    """
    await state.extension(GoogleStore).push.aclose()
    state.flush()
