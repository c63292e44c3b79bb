"""Skip locally, fail in CI, when a real server's binary is missing."""

from __future__ import annotations

import os

import pytest


def missing_server(reason: str) -> None:
    """Skip the test with ``reason``; in CI (``CRMFLOW_REQUIRE_SERVERS=1``) fail."""
    if os.environ.get("CRMFLOW_REQUIRE_SERVERS") == "1":
        pytest.fail(f"required server unavailable: {reason}", pytrace=False)
    pytest.skip(reason)
