"""``crmflow sync mail`` as a separate process on the test database, against
the sandbox Gmail: it imports the user's mail, prints the summary and exits 0,
or 1 when a mailbox failed with the words to act on."""

from __future__ import annotations

from pathlib import Path

import pytest

from crmflow.config import Settings
from crmflow.sandbox.google.demo import seed_demo_google
from crmflow.services.mail import MailService
from tests.calendar_sync.test_cli_sync import _crmflow
from tests.conftest import DbUrls, sqlite_db_urls
from tests.connections.conftest import Flow
from tests.email.conftest import connect_mailbox
from tests.servers.sandbox import Sandbox


@pytest.fixture
def db_urls(tmp_path: Path, sqlite_template: Path) -> DbUrls:
    """SQLite only: the command runs MailService.sync, tested on both databases in
    tests/email/test_gmail_service.py; this proves the command line."""
    return sqlite_db_urls(tmp_path, sqlite_template)


ALICE = "alice@gmail.test"


async def test_sync_mail_command(
    flow: Flow, mail: MailService, settings: Settings, sandbox: Sandbox, tenants
) -> None:
    seed_demo_google(sandbox.state, ALICE)
    await connect_mailbox(flow, mail, tenants.alice.ctx, ALICE)
    code, out, err = await _crmflow(
        settings, "sync", "mail", "--user", tenants.alice.email
    )
    assert code == 0, err
    assert ALICE in out
    _, total = await mail.messages(tenants.alice.ctx)
    assert total > 0
    assert f" {total} " in f" {out} ".replace("\n", " ")

    nobody = await _crmflow(settings, "sync", "mail", "--user", "nobody@x.test")
    assert nobody[0] == 2
    assert "No active user" in nobody[2]

    await sandbox.control("google", "POST", "grants/revoke", json={"email": ALICE})
    await sandbox.control("google", "POST", "tokens/expire", json={"email": ALICE})
    failed = await _crmflow(settings, "sync", "mail", "--user", tenants.alice.email)
    assert failed[0] == 1
    assert "Connect it again" in failed[2].replace("\n", " ")
