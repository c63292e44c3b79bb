"""Pytest fixtures for a real dovecot server on 127.0.0.1 (filled in with the connections work)."""

from __future__ import annotations
