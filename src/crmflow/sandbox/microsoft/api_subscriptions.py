"""Graph ``/subscriptions`` endpoints: create (with the validation handshake), list, get, renew, reauthorize, delete.

Rules and delivery live in :mod:`.subscriptions`. Creation validates the body
under the state lock, runs the validation handshake(s) **outside** it (the
receiver may call back into the sandbox), then stores the subscription
(microsoft-graph.md §5.1-§5.5):

* POST -> 201 with the subscription; PATCH ``expirationDateTime`` renews and
  reauthorizes -> 200 (a changed ``notificationUrl`` is validated by the same
  handshake first); ``lifecycleNotificationUrl`` "cannot be added later by
  PATCH" (400); ``POST /subscriptions/{id}/reauthorize`` -> 204; DELETE -> 204.
* Subscribing to events needs a calendar scope, to messages a mail scope.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from crmflow.sandbox.microsoft._ids import object_id
from crmflow.sandbox.microsoft.api_calendar import read_body
from crmflow.sandbox.microsoft.errors import access_denied, bad_request
from crmflow.sandbox.microsoft.router import CAL_READ, MAIL_READ, Context, GraphRoute
from crmflow.sandbox.microsoft.subscriptions import (
    Subscription,
    Subscriptions,
    check_url,
    validate_endpoint,
)

__all__ = ["ROUTES"]


def _rules(ctx: Context) -> Subscriptions:
    return Subscriptions(ctx.store.data.subscriptions)


def _render(ctx: Context, sub: Subscription) -> dict[str, Any]:
    return {
        "@odata.context": ctx.context_url("subscriptions/$entity"),
        **Subscriptions.render(sub, creator_id=object_id(sub.email)),
    }


def _resolve_container(ctx: Context) -> Any:
    def resolve(kind: str, key: str) -> str:
        if kind == "events":
            return ctx.store.calendars(ctx.email).calendar(key).id
        return ctx.store.mail(ctx.email).folder(key).id

    return resolve


async def create_subscription(ctx: Context) -> Response:
    """``POST /subscriptions``: validate, handshake, store -> 201."""
    body = await read_body(ctx)
    with ctx.state.lock:
        sub = _rules(ctx).create(
            body,
            email=ctx.email,
            client_id=ctx.token.client_id,
            resolve_user=ctx.store.user_by_id,
            resolve_container=_resolve_container(ctx),
            max_minutes=ctx.store.settings.max_subscription_minutes,
            allow_http=ctx.state.config.allow_http_webhooks,
            now=ctx.now(),
        )
        timeout_s = ctx.store.settings.validation_timeout_s
    needed = CAL_READ if sub.kind == "events" else MAIL_READ
    if not needed & set(ctx.token.scopes):
        raise access_denied()
    await validate_endpoint(ctx.dispatcher.client, sub.notification_url, timeout_s)
    if sub.lifecycle_url and sub.lifecycle_url != sub.notification_url:
        await validate_endpoint(ctx.dispatcher.client, sub.lifecycle_url, timeout_s)
    with ctx.state.lock:
        ctx.store.data.subscriptions.subscriptions[sub.id] = sub
        ctx.state.mark_dirty()
        data = _render(ctx, sub)
    return ctx.json(data, status=201)


async def list_subscriptions(ctx: Context) -> Response:
    """``GET /subscriptions``: the calling app's subscriptions."""
    with ctx.state.lock:
        items = [
            Subscriptions.render(s, creator_id=object_id(s.email))
            for s in ctx.store.data.subscriptions.subscriptions.values()
            if s.client_id == ctx.token.client_id and s.email == ctx.email
        ]
    return ctx.json(
        {"@odata.context": ctx.context_url("subscriptions"), "value": items}
    )


async def get_subscription(ctx: Context) -> Response:
    """``GET /subscriptions/{id}``."""
    with ctx.state.lock:
        sub = _rules(ctx).get(ctx.params["subscription-id"], ctx.token.client_id)
        data = _render(ctx, sub)
    return ctx.json(data)


async def update_subscription(ctx: Context) -> Response:
    """``PATCH /subscriptions/{id}``: renew (and reauthorize) -> 200."""
    body = await read_body(ctx)
    if "lifecycleNotificationUrl" in body:
        raise bad_request(
            "lifecycleNotificationUrl cannot be updated; create a new subscription.",
            code="InvalidRequest",
        )
    unknown = set(body) - {"expirationDateTime", "notificationUrl", "@odata.type"}
    if unknown:
        raise bad_request(
            f"The property '{sorted(unknown)[0]}' cannot be updated.",
            code="InvalidRequest",
        )
    new_url: str | None = None
    with ctx.state.lock:
        rules = _rules(ctx)
        sub = rules.get(ctx.params["subscription-id"], ctx.token.client_id)
        expiration = (
            rules.check_expiration(
                str(body["expirationDateTime"]),
                ctx.store.settings.max_subscription_minutes,
                ctx.now(),
            )
            if "expirationDateTime" in body
            else None
        )
        if "notificationUrl" in body:
            new_url = str(body["notificationUrl"])
            check_url(new_url, ctx.state.config.allow_http_webhooks)
        timeout_s = ctx.store.settings.validation_timeout_s
    if new_url is not None and new_url != sub.notification_url:
        # A new notificationUrl is validated like on creation (outside the lock:
        # the receiver may call back into the sandbox).
        await validate_endpoint(ctx.dispatcher.client, new_url, timeout_s)
    with ctx.state.lock:
        sub = rules.get(ctx.params["subscription-id"], ctx.token.client_id)
        if expiration is not None:
            sub.expiration = expiration
        if new_url is not None:
            sub.notification_url = new_url
        sub.reauthorization_sent = False
        ctx.state.mark_dirty()
        data = _render(ctx, sub)
    return ctx.json(data)


async def reauthorize_subscription(ctx: Context) -> Response:
    """``POST /subscriptions/{id}/reauthorize``: 204, expiry unchanged."""
    with ctx.state.lock:
        sub = _rules(ctx).get(ctx.params["subscription-id"], ctx.token.client_id)
        sub.reauthorization_sent = False
        ctx.state.mark_dirty()
    return ctx.empty(204)


async def delete_subscription(ctx: Context) -> Response:
    """``DELETE /subscriptions/{id}`` -> 204."""
    with ctx.state.lock:
        sub = _rules(ctx).get(ctx.params["subscription-id"], ctx.token.client_id)
        del ctx.store.data.subscriptions.subscriptions[sub.id]
        ctx.state.mark_dirty()
    return ctx.empty(204)


ROUTES: list[GraphRoute] = [
    GraphRoute(
        "POST", "/subscriptions", create_subscription, "graph.subscriptions.create"
    ),
    GraphRoute("GET", "/subscriptions", list_subscriptions, "graph.subscriptions.list"),
    GraphRoute(
        "GET",
        "/subscriptions/{subscription-id}",
        get_subscription,
        "graph.subscriptions.get",
    ),
    GraphRoute(
        "PATCH",
        "/subscriptions/{subscription-id}",
        update_subscription,
        "graph.subscriptions.update",
    ),
    GraphRoute(
        "DELETE",
        "/subscriptions/{subscription-id}",
        delete_subscription,
        "graph.subscriptions.delete",
    ),
    GraphRoute(
        "POST",
        "/subscriptions/{subscription-id}/reauthorize",
        reauthorize_subscription,
        "graph.subscriptions.reauthorize",
    ),
]
