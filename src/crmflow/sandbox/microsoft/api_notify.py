"""Queue change notifications for a write (shared by the calendar and mail endpoints).

A write notifies every subscription of the mailbox whose resource covers the
item (``me/events``, ``me/calendars/{id}/events``, ``me/messages``,
``me/mailFolders/{id}/messages``) and whose ``changeType`` lists the change
(microsoft-graph.md §5.4). A ``drop_notification`` fault silently loses it
("Notifications are not 100% reliable").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from crmflow.sandbox.faults import FaultKind
from crmflow.sandbox.microsoft._ids import object_id
from crmflow.sandbox.microsoft.subscriptions import Subscriptions, change_item

if TYPE_CHECKING:
    from crmflow.sandbox.microsoft.store import MicrosoftStore
    from crmflow.sandbox.microsoft.subscriptions import Dispatcher
    from crmflow.sandbox.state import SandboxState

__all__ = ["NotifyTarget", "notify"]


class NotifyTarget(Protocol):
    """What :func:`notify` reads: a Graph request context or a control-API actor."""

    @property
    def state(self) -> SandboxState: ...
    @property
    def store(self) -> MicrosoftStore: ...
    @property
    def dispatcher(self) -> Dispatcher: ...
    @property
    def email(self) -> str: ...


def notify(
    ctx: NotifyTarget,
    kind: str,
    container: str | None,
    change: str,
    item_id: str,
    etag: str,
    *,
    email: str | None = None,
) -> int:
    """Queue notifications for one change in ``email``'s mailbox (default: the caller's).

    Returns how many were queued. Call with the state lock held.
    """
    owner = email or ctx.email
    subs = Subscriptions(ctx.store.data.subscriptions).matching(
        owner, kind, container, change
    )
    queued = 0
    for sub in subs:
        dropped = ctx.state.faults.draw(
            {FaultKind.DROP_NOTIFICATION},
            user=owner,
            api="graph",
            method="graph.notification",
        )
        if dropped:
            continue
        item = change_item(
            sub,
            change=change,
            item_id=item_id,
            etag=etag,
            user_id=object_id(owner),
            tenant_id=ctx.store.tenant_of(owner),
        )
        ctx.dispatcher.enqueue(sub.notification_url, item, sub.id, lifecycle=False)
        queued += 1
    return queued
