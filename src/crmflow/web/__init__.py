"""HTTP: the JSON API under ``/api`` (Bearer tokens) and the server-rendered UI
(session cookie, CSRF-protected forms)."""

from __future__ import annotations
