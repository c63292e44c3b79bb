"""Microsoft sandbox: a local Microsoft identity platform and Microsoft Graph v1.0.

Emulates ``login.microsoftonline.com/{tenant}/oauth2/v2.0/…`` and
``graph.microsoft.com/v1.0/…`` (Outlook calendar, mail, change
notifications, ``$batch``) under one base URL, faithfully enough that
crmflow's Outlook adapters are written and tested against it. The behaviour
follows Microsoft's public identity platform and Graph v1.0 documentation;
docs/sandbox.md maps every behaviour to the test that covers it.

Public surface:

* :func:`create_microsoft_app` — the ASGI app (see :mod:`.app` for the
  host -> path mapping).
* :func:`seed_demo_microsoft` — demo data for ``crmflow demo``.
* :class:`MicrosoftStore`, :class:`GraphSettings` — the state extension and
  its runtime knobs.

Shared plumbing (users, clock, faults, request log, persistence) comes from
:mod:`crmflow.sandbox.state`; nothing outside ``crmflow.sandbox`` is imported.
"""

from __future__ import annotations

from crmflow.sandbox.microsoft.app import create_microsoft_app
from crmflow.sandbox.microsoft.seed import seed_demo_microsoft
from crmflow.sandbox.microsoft.store import GraphSettings, MicrosoftStore

__all__ = [
    "GraphSettings",
    "MicrosoftStore",
    "create_microsoft_app",
    "seed_demo_microsoft",
]
