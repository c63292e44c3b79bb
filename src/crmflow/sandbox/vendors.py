"""Google and Microsoft side by side under one root URL.

``{root}google/...`` is Google, ``{root}microsoft/...`` is Microsoft (identity
platform and Graph). Every entry point (``crmflow sandbox serve``,
:class:`~crmflow.sandbox.serve.SandboxServer`, the demo's mount inside crmflow)
builds its app here, so they serve the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import ASGIApp

from crmflow.sandbox.app import GOOGLE_PREFIX, create_sandbox_app, shutdown_sandbox
from crmflow.sandbox.microsoft.app import MicrosoftApp
from crmflow.sandbox.microsoft.store import GraphSettings
from crmflow.sandbox.state import SandboxState

MICROSOFT_PREFIX = "/microsoft"


@dataclass(frozen=True)
class SandboxApp:
    """The combined ASGI app and what to call when its host shuts down."""

    app: ASGIApp
    microsoft: MicrosoftApp
    state: SandboxState

    async def shutdown(self) -> None:
        """Stop notification delivery and persist state.

        The app's own lifespan does this when it is the server's root app; call
        it yourself when the app is mounted inside another one (a ``Mount`` does
        not forward lifespan events).
        """
        await self.microsoft.dispatcher.stop()
        await shutdown_sandbox(self.state)


def create_vendor_app(
    state: SandboxState, root_url: str, *, graph_settings: GraphSettings | None = None
) -> SandboxApp:
    """Build the combined sandbox served at ``root_url`` (``http://host:port/``)."""
    root = root_url.rstrip("/")
    microsoft = MicrosoftApp(
        state, base_url=root + MICROSOFT_PREFIX, settings=graph_settings
    )
    app = create_sandbox_app(
        state,
        base_url=root + "/",
        mounts={MICROSOFT_PREFIX: microsoft},
        on_shutdown=[microsoft.dispatcher.stop],
    )
    return SandboxApp(app=app, microsoft=microsoft, state=state)


def base_urls(root_url: str) -> dict[str, str]:
    """The URLs crmflow swaps in for the real hosts, for a sandbox at ``root_url``."""
    root = root_url.rstrip("/")
    google = root + GOOGLE_PREFIX + "/"
    microsoft = root + MICROSOFT_PREFIX + "/"
    return {
        "google": google,
        "google_authorization_endpoint": google + "o/oauth2/v2/auth",
        "google_token_endpoint": google + "token",
        "google_calendar_api_endpoint": google + "calendar/v3/",
        "google_gmail_api_endpoint": google,
        "google_control": google + "_sandbox/",
        "microsoft": microsoft,
        "microsoft_authority": microsoft + "common",
        "microsoft_graph": microsoft + "v1.0/",
        "microsoft_control": microsoft + "_sandbox/",
    }
