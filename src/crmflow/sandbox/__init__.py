"""crmflow's local emulators of the Google (and later Microsoft) HTTP APIs.

The sandbox serves Google's real paths, parameters, JSON fields, status codes,
headers and error bodies over real HTTP, so crmflow only swaps base URLs
between sandbox and production (docs/sandbox.md). It backs the demo and every
provider test, and it stands alone: it imports nothing from crmflow outside
``crmflow.sandbox`` (import-linter contract "The sandbox stands alone"), so it
cannot share bugs with the adapters it tests.

Public surface:

* :func:`crmflow.sandbox.app.create_sandbox_app` — the ASGI app
  (``/google/...``), and ``shutdown_sandbox`` for mounted use, re-exported here;
* :class:`crmflow.sandbox.state.SandboxState` — users, clock, faults, request
  log, vendor data; optional SQLite persistence;
* :mod:`crmflow.sandbox.faults` — typed fault injection knobs;
* :mod:`crmflow.sandbox.serve` — ``run()`` for ``crmflow sandbox serve`` and
  ``SandboxServer`` for in-process use;
* :func:`crmflow.sandbox.google.demo.seed_demo_google` — demo data.

Behaviour sources: Google's and Microsoft's public documentation and Google's
discovery documents; docs/sandbox.md maps each behaviour to its test.
"""

from __future__ import annotations

from crmflow.sandbox.app import create_sandbox_app, shutdown_sandbox
from crmflow.sandbox.state import SandboxState

__all__ = ["SandboxState", "create_sandbox_app", "shutdown_sandbox"]
