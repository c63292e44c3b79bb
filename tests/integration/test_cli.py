"""The ``crmflow`` command line, run as a real process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from alembic.script import ScriptDirectory

from crmflow.store.crypto import generate_key_entry
from crmflow.store.migrate import alembic_config

CRMFLOW = [sys.executable, "-m", "crmflow"]


def run(args, env, stdin=None, cwd=None):
    return subprocess.run(
        [*CRMFLOW, *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


@pytest.fixture
def env(tmp_path):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CRMFLOW_")}
    clean.update(
        CRMFLOW_DATA_DIR=str(tmp_path / "data"),
        CRMFLOW_DATABASE_URL=f"sqlite:///{tmp_path}/data/crm.db",
        CRMFLOW_ENCRYPTION_KEYS=generate_key_entry("cli1"),
        CRMFLOW_SESSION_SECRET="z" * 40,
        COLUMNS="200",
    )
    return clean


def test_config_show_masks_secrets(env, tmp_path):
    env["CRMFLOW_GOOGLE_CLIENT_SECRET"] = "GOCSPX-very-secret"
    result = run(["config", "show"], env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "CRMFLOW_GOOGLE_CLIENT_SECRET" in result.stdout
    assert "GOCSPX-very-secret" not in result.stdout
    assert env["CRMFLOW_ENCRYPTION_KEYS"].split(":")[1] not in result.stdout
    assert "z" * 40 not in result.stdout


def test_malformed_setting_stops_with_the_variable_named(env, tmp_path):
    env["CRMFLOW_PORT"] = "eighty"
    result = run(["config", "show"], env, cwd=tmp_path)
    assert result.returncode == 2
    assert "CRMFLOW_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_without_keys_stops_at_start_up(env, tmp_path):
    del env["CRMFLOW_ENCRYPTION_KEYS"]
    result = run(["serve", "--port", "1"], env, cwd=tmp_path)
    assert result.returncode == 2
    assert "CRMFLOW_ENCRYPTION_KEYS is not set" in result.stderr
    assert "crmflow keys generate" in result.stderr


def test_db_upgrade_users_create_and_key_rotation(env, tmp_path):
    up = run(["db", "upgrade"], env, cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert f"revision {head}" in up.stdout
    created = run(
        [
            "users",
            "create",
            "--email",
            "Ops@Example.com",
            "--org",
            "acme",
            "--create-org",
            "--role",
            "admin",
            "--password-stdin",
        ],
        env,
        stdin="a-long-password\n",
        cwd=tmp_path,
    )
    assert created.returncode == 0, created.stderr
    assert "Created user Ops@Example.com" in created.stdout
    dup = run(
        [
            "users",
            "create",
            "--email",
            "ops@example.com",
            "--org",
            "acme",
            "--password-stdin",
        ],
        env,
        stdin="a-long-password\n",
        cwd=tmp_path,
    )
    assert dup.returncode == 2
    assert "already exists" in dup.stderr

    generated = run(["keys", "generate", "--id", "cli2"], env, cwd=tmp_path)
    assert generated.returncode == 0
    entry = generated.stdout.strip()
    assert entry.startswith("cli2:")
    env["CRMFLOW_ENCRYPTION_KEYS"] += "," + entry
    rotated = run(["keys", "rotate"], env, cwd=tmp_path)
    assert rotated.returncode == 0, rotated.stderr
    assert "to key 'cli2'" in rotated.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_demo_serves_and_prints_the_logins(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMFLOW_")}
    port = _free_port()
    data = tmp_path / "demo-data"
    proc = subprocess.Popen(
        [*CRMFLOW, "demo", "--port", str(port), "--data-dir", str(data)],
        env={**env, "COLUMNS": "200"},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                resp = httpx.get(f"http://127.0.0.1:{port}/docs", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "demo did not start"
                time.sleep(0.2)
        assert resp.status_code == 200
        # the sandbox is mounted with a seeded Google and Microsoft account per login
        listing = httpx.get(f"http://127.0.0.1:{port}/sandbox/", timeout=5).json()
        assert listing["google"] == f"http://127.0.0.1:{port}/sandbox/google/"
        users = httpx.get(
            f"http://127.0.0.1:{port}/sandbox/google/_sandbox/users", timeout=5
        ).text
        assert "alice@demo.crmflow.test" in users
        consent = httpx.get(
            f"http://127.0.0.1:{port}/sandbox/google/o/oauth2/v2/auth",
            params={
                "client_id": "crmflow-demo.apps.googleusercontent.com",
                "redirect_uri": f"http://127.0.0.1:{port}/oauth/callback/google",
                "response_type": "code",
                "scope": "https://www.googleapis.com/auth/calendar",
            },
            timeout=5,
        )
        assert consent.status_code == 200, consent.text
        login = httpx.post(
            f"http://127.0.0.1:{port}/api/me",
            headers={"Authorization": "Bearer crm_invalid"},
            timeout=5,
        )
        assert login.status_code in (401, 405)
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert f"http://127.0.0.1:{port}/" in output
    assert "alice@demo.crmflow.test" in output
    assert "password: alice-demo-pw" in output
    assert (data / "crmflow.db").exists()
    assert (data / "sandbox-state.sqlite3").exists()
    assert oct((data / "demo-secrets.env").stat().st_mode & 0o777) == "0o600"
    secrets_text = (data / "demo-secrets.env").read_text()
    # the generated secrets are never printed
    for line in secrets_text.splitlines():
        assert line.split("=", 1)[1] not in output


def test_demo_second_start_reuses_data(tmp_path):
    from crmflow.demo import demo_settings

    first = demo_settings(Path(tmp_path))
    second = demo_settings(Path(tmp_path))
    assert first.encryption_keys == second.encryption_keys
    assert first.session_secret == second.session_secret
    # push on: the demo's sandbox notifies the demo itself
    assert first.webhook_base == str(first.public_base_url).rstrip("/")


def test_sandbox_serve_prints_base_urls_and_serves_both_vendors(tmp_path):
    port = _free_port()
    proc = subprocess.Popen(
        [
            *CRMFLOW,
            "sandbox",
            "serve",
            "--port",
            str(port),
            "--state",
            str(tmp_path / "s.sqlite3"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                created = httpx.post(
                    f"http://127.0.0.1:{port}/google/_sandbox/users",
                    json={"email": "zoe@example.com"},
                    timeout=2,
                )
                break
            except httpx.TransportError:
                assert proc.poll() is None
                assert time.monotonic() < deadline, "sandbox did not start"
                time.sleep(0.2)
        assert created.status_code in (200, 201), created.text
        ms = httpx.get(
            f"http://127.0.0.1:{port}/microsoft/common/v2.0/.well-known/openid-configuration",
            timeout=5,
        )
        assert (
            ms.json()["token_endpoint"]
            == f"http://127.0.0.1:{port}/microsoft/common/oauth2/v2.0/token"
        )
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert f"http://127.0.0.1:{port}/google/" in output
    assert f"http://127.0.0.1:{port}/microsoft/v1.0/" in output
    assert (tmp_path / "s.sqlite3").exists()
