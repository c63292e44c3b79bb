"""The webhook receivers' first check of a channel, answered from memory for
channels that passed it lately, on SQLite and PostgreSQL: what the database
is asked (its statements counted at the driver) and what a remembered channel
that is gone still gets (nothing)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, select

from crmflow.bootstrap import Services
from crmflow.domain.integrations import ProviderKey
from crmflow.services.mail import MailService
from crmflow.services.push import KNOWN_FOR_S, KnownChannels, receive_graph
from crmflow.store import models
from crmflow.store.db import Database
from crmflow.store.push import Delivery, PushChannelStore
from tests.connections.conftest import Flow
from tests.email.conftest import connect_mailbox
from tests.jobs.conftest import subscribe_mailbox

ALICE = "alice@gmail.test"
GRAPH = ProviderKey.MICROSOFT
CLAIM = ("subscription-1", "state")  # subscribe_mailbox's subscription


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _schedule(admin_db: Database) -> list[tuple[Any, ...]]:
    """Every mailbox's schedule columns."""
    async with admin_db.admin() as session:
        rows = await session.execute(
            select(
                models.EmailAccount.id,
                models.EmailAccount.next_sync_at,
                models.EmailAccount.sync_pushed,
            ).order_by(models.EmailAccount.id)
        )
        return [tuple(row) for row in rows]


@pytest.fixture
def reads(admin_db: Database) -> Iterator[list[str]]:
    """The first checks' reads of the channel table on ``admin_db``, as sent
    to the database."""
    seen: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if " ".join(statement.split()).startswith(
            "SELECT push_channels.channel_id, push_channels.token_sha256"
        ):
            seen.append(statement)

    engine = admin_db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", before)
    yield seen
    event.remove(engine, "before_cursor_execute", before)


@pytest.fixture
async def subscribed(
    flow: Flow, mail: MailService, services: Services, tenants: Any
) -> Any:
    """Alice's mailbox with a Graph subscription row (client state ``state``)."""
    mailbox = await connect_mailbox(flow, mail, tenants.alice.ctx, ALICE)
    await subscribe_mailbox(services, tenants.alice.ctx, mailbox.id)
    return mailbox


async def test_a_channel_that_passed_is_checked_from_memory(
    subscribed: Any, admin_db: Database, reads: list[str]
) -> None:
    known = KnownChannels(clock=Ticks())
    assert await known.genuine(admin_db, GRAPH, [CLAIM]) == {"subscription-1"}
    assert len(reads) == 1
    for _ in range(3):
        assert await known.genuine(admin_db, GRAPH, [CLAIM]) == {"subscription-1"}
    assert len(reads) == 1
    assert len(known) == 1


async def test_a_wrong_token_is_read_every_time_and_never_remembered(
    subscribed: Any, admin_db: Database, reads: list[str]
) -> None:
    known = KnownChannels(clock=Ticks())
    wrong = ("subscription-1", "guessed")
    for _ in range(2):
        assert await known.genuine(admin_db, GRAPH, [wrong]) == set()
    assert len(reads) == 2
    assert len(known) == 0
    # the right token is looked up, then remembered; a wrong one for the
    # remembered channel is still read and refused
    assert await known.genuine(admin_db, GRAPH, [CLAIM]) == {"subscription-1"}
    assert await known.genuine(admin_db, GRAPH, [wrong, CLAIM]) == {"subscription-1"}
    assert len(reads) == 4
    # a channel of the same id at another provider is another channel
    assert await known.genuine(admin_db, ProviderKey.GOOGLE, [CLAIM]) == set()
    assert len(reads) == 5


async def test_a_channel_is_remembered_for_a_while_and_within_a_bound(
    subscribed: Any,
    services: Services,
    tenants: Any,
    admin_db: Database,
    reads: list[str],
) -> None:
    ticks = Ticks()
    known = KnownChannels(clock=ticks, most=1)
    await known.genuine(admin_db, GRAPH, [CLAIM])
    ticks.now += KNOWN_FOR_S - 1
    await known.genuine(admin_db, GRAPH, [CLAIM])
    assert len(reads) == 1
    ticks.now += 2  # past its time: read again
    await known.genuine(admin_db, GRAPH, [CLAIM])
    assert len(reads) == 2
    # a second channel pushes the first out of a memory of one
    await subscribe_mailbox(
        services,
        tenants.alice.ctx,
        subscribed.id,
        subscription_id="subscription-2",
        client_state="other",
    )
    await known.genuine(admin_db, GRAPH, [("subscription-2", "other")])
    assert len(known) == 1
    await known.genuine(admin_db, GRAPH, [CLAIM])
    assert len(reads) == 4


async def test_a_remembered_channel_that_is_gone_is_refused_and_does_nothing(
    subscribed: Any, services: Services, tenants: Any, admin_db: Database
) -> None:
    known = KnownChannels(clock=Ticks())
    assert await known.genuine(admin_db, GRAPH, [CLAIM]) == {"subscription-1"}
    async with services.db.tenant(tenants.alice.ctx) as session:
        store = PushChannelStore(session)
        (channel,) = await store.of_account(subscribed.id, mailbox=True)
        await store.remove(channel.id)
    before = await _schedule(admin_db)
    notification = {
        "value": [
            {
                "subscriptionId": CLAIM[0],
                "clientState": CLAIM[1],
                "changeType": "created",
                "resource": "me/messages/m1",
                "resourceData": {"id": "m1", "@odata.etag": "e1"},
            }
        ]
    }
    batch = await receive_graph(
        admin_db, notification, known=known, now=dt.datetime.now(dt.UTC)
    )
    # remembered, so past the first check; refused under the lock
    assert batch.results == (Delivery.UNKNOWN,)
    assert not batch.genuine
    assert await _schedule(admin_db) == before
    # the same notification from a channel that is there acts: the test can fail
    await subscribe_mailbox(services, tenants.alice.ctx, subscribed.id)
    acted = await receive_graph(
        admin_db, notification, known=known, now=dt.datetime.now(dt.UTC)
    )
    assert acted.results == (Delivery.ACCEPTED,)
    assert await _schedule(admin_db) != before
