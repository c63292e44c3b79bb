"""The shared retry policy through the mail service, against the sandbox's
Gmail faults: a rate limit is waited out (its Retry-After) and
the sync succeeds; a limit that does not lift ends the sync after
``http_max_attempts`` tries with words to act on, never a hot loop."""

from __future__ import annotations

from crmflow.sandbox.google.demo import seed_demo_google
from crmflow.services.mail import MailService
from tests.connections.conftest import Flow, Pauses
from tests.email.conftest import connect_mailbox
from tests.servers.sandbox import Sandbox

ALICE = "alice@gmail.test"
LIST = "gmail.users.messages.list"


async def test_rate_limits_are_waited_out_then_fail_visibly(
    flow: Flow, mail: MailService, sandbox: Sandbox, pauses: Pauses, tenants
) -> None:
    ctx = tenants.alice.ctx
    seed_demo_google(sandbox.state, ALICE)
    account = await connect_mailbox(flow, mail, ctx, ALICE)

    await sandbox.add_fault(
        "google",
        kind="rate_limit_429",
        api="gmail",
        method=LIST,
        retry_after_s=2,
        count=2,
    )
    result = await mail.sync(ctx, account.id)
    assert (result.error, result.imported > 0) == (None, True)
    assert pauses.taken == [2, 2]
    statuses = [r["status"] for r in await sandbox.requests(LIST)]
    assert statuses == [429, 429, 200]

    # a limit that does not lift: 4 tries (the default), then the sync fails
    # with words to act on; the next scheduled sync backs off
    pauses.taken.clear()
    await sandbox.add_fault(
        "google", kind="rate_limit_403", api="gmail", retry_after_s=1, count=50
    )
    failed = await mail.sync(ctx, account.id, full=True)
    assert failed.error is not None
    assert "slow down" in failed.error
    assert pauses.taken == [1, 1, 1]
