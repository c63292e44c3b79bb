"""Password hashing: what it costs, and when."""

from __future__ import annotations

import subprocess
import sys

from crmflow.store import passwords

_COUNT_HASHES_WHILE_IMPORTING = """
import argon2
calls = []
real = argon2.PasswordHasher.hash
argon2.PasswordHasher.hash = lambda self, *a, **k: calls.append(1) or real(self, *a, **k)
import crmflow.web.app, crmflow.cli, crmflow.jobs.tasks  # noqa: F401
print(len(calls))
"""


def test_importing_the_app_hashes_no_password():
    # an argon2id hash holds 64 MiB for a moment: a process that never checks
    # a password (a worker, a sync) must not pay it at start-up
    out = subprocess.run(
        [sys.executable, "-c", _COUNT_HASHES_WHILE_IMPORTING],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "0", out.stderr


def test_an_unknown_user_costs_one_verification_and_never_matches():
    stored = passwords.hash_password("correct horse")
    assert passwords.verify_password(stored, "correct horse")
    assert not passwords.verify_password(stored, "wrong horse")
    assert not passwords.verify_password(None, "correct horse")
    assert not passwords.verify_password(None, "crmflow-timing-equaliser")
    assert not passwords.verify_password("not a hash", "correct horse")
