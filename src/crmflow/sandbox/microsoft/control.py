"""The Microsoft sandbox control API under ``{base}/_sandbox/`` (tests and the demo only).

JSON in, JSON out; errors are ``{"error": message}`` (shared
:class:`~crmflow.sandbox._http.ControlError`). Endpoints:

=========================================  ===============================================
``POST /users`` {email, name?}              add a sandbox user (shared with every vendor) -> 201
``GET /users``                              list users with their Graph id and tenant
``POST /clients`` {client_id?, client_secret?, redirect_uris, name?}   register an app -> 201
``GET /clients``                            registered apps
``POST /tokens`` {email, scopes, client_id?}   consent and issue tokens directly -> 200
``POST /tokens/expire`` {email, kind: access|refresh, code?}   expire tokens (refresh: AADSTS code, default 70008)
``POST /grants/revoke`` {email, client_id?}  revoke consent (AADSTS50173) + reauthorizationRequired
``GET/PATCH /config``                       Graph settings + ``allow_http_webhooks``
``POST /faults`` {kind, …}                  add a shared or Graph fault -> 201
``GET /faults``, ``DELETE /faults[/{id}]``  list / remove faults
``POST /delta/expire`` {email}              invalidate every delta token (410 SyncStateNotFound)
``POST /users/{email}/events`` {event}      out-of-band create (as if in Outlook) -> 201
``PATCH /users/{email}/events/{id}`` {…}    out-of-band update
``DELETE /users/{email}/events/{id}``       out-of-band delete
``POST /users/{email}/events/{id}/touch``   new changeKey only (Exchange does this on its own)
``POST /users/{email}/messages`` {message, from?}   deliver an incoming message to the inbox -> 201
``GET /subscriptions``                      every subscription
``POST /subscriptions/{id}/lifecycle`` {event}   send a lifecycle notification (subscriptionRemoved also deletes)
=========================================  ===============================================

Out-of-band edits send change notifications like real edits do. Anything
else (``GET /``, ``GET|POST /clock``, ``GET|DELETE /requests``, ``POST /reset``,
``POST /flush``) is answered by the vendor-neutral control API
(:mod:`crmflow.sandbox.control`), so shapes match the Google mount's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Router
from starlette.types import Receive, Scope, Send

from crmflow.sandbox._http import ControlError, json_response, read_json_object
from crmflow.sandbox.control import control_routes, user_json
from crmflow.sandbox.faults import Fault, FaultKind
from crmflow.sandbox.microsoft.api_notify import notify
from crmflow.sandbox.microsoft.delta import Deltas
from crmflow.sandbox.microsoft.errors import GraphError
from crmflow.sandbox.microsoft.faults import GraphFault, GraphFaultKind
from crmflow.sandbox.microsoft.identity import parse_scopes, tenant_of
from crmflow.sandbox.microsoft.store import GraphSettings
from crmflow.sandbox.microsoft.subscriptions import LIFECYCLE_EVENTS, lifecycle_item
from crmflow.sandbox.microsoft.tokens import token_response
from crmflow.sandbox.requestlog import annotate
from crmflow.sandbox.state import UnknownUser

if TYPE_CHECKING:
    from crmflow.sandbox.microsoft.app import MicrosoftApp
    from crmflow.sandbox.microsoft.store import MicrosoftStore
    from crmflow.sandbox.microsoft.subscriptions import Dispatcher
    from crmflow.sandbox.state import SandboxState

__all__ = ["Control"]

_SETTINGS_FIELDS = {f.name for f in dataclasses.fields(GraphSettings)}


@dataclass
class _Actor:
    """What :func:`notify` needs, for out-of-band edits."""

    state: SandboxState
    store: MicrosoftStore
    dispatcher: Dispatcher
    email: str


class _Shared(Response):
    """Hands a request to the vendor-neutral control router."""

    def __init__(self, router: Router, path: str) -> None:
        super().__init__()
        self.router = router
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sub = dict(scope)
        sub["path"] = self.path
        sub["raw_path"] = self.path.encode()
        sub["root_path"] = ""
        await self.router(sub, receive, send)


class Control:
    """Handlers of ``{base}/_sandbox/…``."""

    def __init__(self, app: MicrosoftApp) -> None:
        self.app = app
        self.state = app.state
        self.store = app.store
        self.shared = Router(routes=control_routes(app.state))

    async def handle(self, request: Request, path: str) -> Response:
        """Dispatch one control request (``path`` after ``/_sandbox``)."""
        annotate(request.scope).api_method = "sandbox.control"
        parts = [p for p in path.split("/") if p]
        method = request.method
        try:
            return await self._route(request, method, parts)
        except ControlError as exc:
            return exc.response()
        except GraphError as exc:
            return json_response(
                {"error": exc.message, "code": exc.code}, status=exc.status
            )
        except (ValueError, TypeError, KeyError, UnknownUser) as exc:
            return ControlError(400, str(exc)).response()

    async def _route(self, request: Request, method: str, parts: list[str]) -> Response:
        head = parts[0] if parts else ""
        if head == "users" and len(parts) == 1:
            return (
                self.add_user(await read_json_object(request))
                if method == "POST"
                else self.list_users()
            )
        if head == "users" and len(parts) >= 3:
            return await self.out_of_band(request, method, parts[1].lower(), parts[2:])
        if head == "clients" and len(parts) == 1:
            return (
                self.add_client(await read_json_object(request))
                if method == "POST"
                else self.list_clients()
            )
        if head == "tokens" and parts == ["tokens"] and method == "POST":
            return self.issue_tokens(await read_json_object(request))
        if parts == ["tokens", "expire"] and method == "POST":
            return self.expire_tokens(await read_json_object(request))
        if parts == ["grants", "revoke"] and method == "POST":
            return self.revoke(await read_json_object(request))
        if parts == ["config"]:
            if method == "PATCH":
                self.patch_config(await read_json_object(request))
            return json_response(self.config_json())
        if head == "faults":
            return await self.faults(request, method, parts[1:])
        if parts == ["delta", "expire"] and method == "POST":
            body = await read_json_object(request)
            email = self.state.user(str(body["email"])).email
            with self.state.lock:
                settings = self.store.settings
                count = Deltas(
                    self.store.data.delta,
                    max_age_s=settings.delta_token_max_age_s,
                    per_mailbox=settings.delta_tokens_per_mailbox,
                ).invalidate(email)
                self.state.mark_dirty()
            return json_response({"expired": count})
        if parts == ["subscriptions"] and method == "GET":
            with self.state.lock:
                subs = [
                    dataclasses.asdict(s)
                    | {
                        "expiration": s.expiration.isoformat(),
                        "created": s.created.isoformat(),
                    }
                    for s in self.store.data.subscriptions.subscriptions.values()
                ]
            return json_response({"subscriptions": subs})
        if (
            head == "subscriptions"
            and len(parts) == 3
            and parts[2] == "lifecycle"
            and method == "POST"
        ):
            return self.lifecycle(parts[1], await read_json_object(request))
        return _Shared(self.shared, "/" + "/".join(parts))

    # -- users and apps ------------------------------------------------------------------------

    def _user_json(self, email: str) -> dict[str, Any]:
        """The shared user JSON plus the Graph ``id`` and ``tenantId``."""
        user = self.state.user(email)
        graph_id = self.store.user_json(email)["id"]
        return user_json(user) | {"id": graph_id, "tenantId": tenant_of(email)}

    def add_user(self, body: dict[str, Any]) -> Response:
        """``POST /users``."""
        email = body.get("email")
        if not isinstance(email, str):
            raise ControlError(400, "email is required")
        user = self.state.add_user(email, body.get("name"))
        with self.state.lock:
            self.store.mailbox(user.email)
            data = self._user_json(user.email)
        return json_response(data, status=201)

    def list_users(self) -> Response:
        """``GET /users``."""
        with self.state.lock:
            return json_response(
                {"users": [self._user_json(e) for e in sorted(self.state.users)]}
            )

    def add_client(self, body: dict[str, Any]) -> Response:
        """``POST /clients``."""
        uris = body.get("redirect_uris") or []
        if not isinstance(uris, list):
            raise ControlError(400, "redirect_uris must be a list")
        with self.state.lock:
            app = self.store.identity.register_app(
                client_id=body.get("client_id"),
                client_secret=body.get("client_secret"),
                redirect_uris=[str(u) for u in uris],
                name=str(body.get("name") or "crmflow"),
            )
            self.state.mark_dirty()
            return json_response(app.public_json(), status=201)

    def list_clients(self) -> Response:
        """``GET /clients``."""
        with self.state.lock:
            return json_response(
                {
                    "clients": [
                        a.public_json() for a in self.store.data.identity.apps.values()
                    ]
                }
            )

    # -- tokens and grants -----------------------------------------------------------------------

    def issue_tokens(self, body: dict[str, Any]) -> Response:
        """``POST /tokens``: the token endpoint's response, without the browser."""
        email = self.state.user(str(body.get("email", ""))).email
        raw = body.get("scopes") or [
            "openid",
            "profile",
            "email",
            "offline_access",
            "User.Read",
            "Calendars.ReadWrite",
            "Mail.ReadWrite",
            "Mail.Send",
        ]
        scope_text = " ".join(raw) if isinstance(raw, list) else str(raw)
        with self.state.lock:
            identity = self.store.identity
            client_id = body.get("client_id")
            app = (
                identity.app(str(client_id), "common")
                if client_id
                else identity.default_app()
            )
            scopes, _resource = parse_scopes(scope_text)
            result = identity.issue_direct(
                app,
                email=email,
                scopes=identity.expand_default(app, scopes),
                lifetime_s=self.app.login.lifetime_s(),
                now_ms=self.state.clock.now_ms(),
            )
            self.state.mark_dirty()
            data = token_response(
                result,
                key=self.store.signing_key,
                issuer_base=self.app.base_url,
                name=self.state.user(email).name,
                now_s=int(self.state.clock.now().timestamp()),
                client_info=True,
            )
        data["client_id"] = app.client_id
        return json_response(data)

    def expire_tokens(self, body: dict[str, Any]) -> Response:
        """``POST /tokens/expire``."""
        email = self.state.user(str(body.get("email", ""))).email
        kind = body.get("kind", "access")
        with self.state.lock:
            identity = self.store.identity
            if kind == "access":
                count = identity.expire_access_tokens(email)
            elif kind == "refresh":
                code = int(body.get("code", 70008))
                if code not in {
                    70008,
                    700082,
                    50173,
                    70000,
                    9002313,
                    50076,
                    65001,
                    70043,
                }:
                    raise ControlError(400, f"unsupported AADSTS code {code}")
                count = identity.kill_refresh_tokens(email, code)
            else:
                raise ControlError(400, "kind must be access or refresh")
            self.state.mark_dirty()
        return json_response({"expired": count})

    def revoke(self, body: dict[str, Any]) -> Response:
        """``POST /grants/revoke``: consent gone, tokens dead, subscriptions told to reauthorize."""
        email = self.state.user(str(body.get("email", ""))).email
        client_id = body.get("client_id")
        with self.state.lock:
            count = self.store.identity.revoke_grants(email, client_id)
            for sub in self.store.data.subscriptions.subscriptions.values():
                if (
                    sub.email == email
                    and sub.lifecycle_url
                    and (client_id is None or sub.client_id == client_id)
                ):
                    self.app.dispatcher.enqueue(
                        sub.lifecycle_url,
                        lifecycle_item(
                            sub, "reauthorizationRequired", tenant_of(email)
                        ),
                        sub.id,
                        lifecycle=True,
                    )
            self.state.mark_dirty()
        return json_response({"revoked": count})

    # -- config, faults, log ---------------------------------------------------------------------

    def config_json(self) -> dict[str, Any]:
        """Graph settings plus the shared ``allow_http_webhooks``."""
        return dataclasses.asdict(self.store.settings) | {
            "allow_http_webhooks": self.state.config.allow_http_webhooks
        }

    def patch_config(self, body: dict[str, Any]) -> None:
        """``PATCH /config``."""
        with self.state.lock:
            for key, value in body.items():
                if key == "allow_http_webhooks":
                    self.state.config.allow_http_webhooks = bool(value)
                    self.state.mark_dirty()
                elif key in _SETTINGS_FIELDS:
                    setattr(self.store.settings, key, value)
                else:
                    raise ControlError(400, f"unknown config key {key!r}")

    async def faults(self, request: Request, method: str, rest: list[str]) -> Response:
        """``/faults`` collection."""
        if method == "POST" and not rest:
            body = await read_json_object(request)
            kind = str(body.get("kind", ""))
            if kind in {k.value for k in GraphFaultKind}:
                gfault = GraphFault(
                    kind=GraphFaultKind(kind),
                    user=body.get("user"),
                    api=body.get("api"),
                    method=body.get("method"),
                    count=body.get("count"),
                    rate=float(body.get("rate", 1.0)),
                    retry_after_s=body.get("retry_after_s"),
                    aadsts_code=int(body.get("aadsts_code", 70008)),
                    after_write=bool(body.get("after_write", True)),
                )
                self.store.faults.add(gfault)
                return json_response(gfault.as_json(), status=201)
            if kind in {k.value for k in FaultKind}:
                fault = Fault(
                    kind=FaultKind(kind),
                    user=body.get("user"),
                    api=body.get("api"),
                    method=body.get("method"),
                    count=body.get("count"),
                    rate=float(body.get("rate", 1.0)),
                    retry_after_s=body.get("retry_after_s"),
                    latency_ms=int(body.get("latency_ms", 0)),
                )
                self.state.faults.add(fault)
                return json_response(_fault_json(fault), status=201)
            raise ControlError(400, f"unknown fault kind {kind!r}")
        if method == "GET" and not rest:
            shared = [_fault_json(f) for f in self.state.faults.active()]
            return json_response(
                {"faults": shared + [f.as_json() for f in self.store.faults.active()]}
            )
        if method == "DELETE" and not rest:
            self.state.faults.clear()
            self.store.faults.clear()
            return json_response({"cleared": True})
        if method == "DELETE" and len(rest) == 1:
            removed = self.state.faults.remove(rest[0]) or self.store.faults.remove(
                rest[0]
            )
            if not removed:
                raise ControlError(404, f"no fault {rest[0]}")
            return json_response({"removed": rest[0]})
        raise ControlError(405, "unsupported faults call")

    # -- out-of-band edits -------------------------------------------------------------------------

    def _actor(self, email: str) -> _Actor:
        return _Actor(self.state, self.store, self.app.dispatcher, email)

    async def out_of_band(
        self, request: Request, method: str, email: str, rest: list[str]
    ) -> Response:
        """Edits made "in Outlook", not through the API."""
        email = self.state.user(email).email
        now = self.state.clock.now()
        if rest == ["events"] and method == "POST":
            body = await read_json_object(request)
            with self.state.lock:
                view = self.store.calendars(email).create(
                    body, calendar_id=None, now=now
                )
                notify(
                    self._actor(email),
                    "events",
                    view.event.calendar_id,
                    "created",
                    view.id,
                    view.etag,
                )
                self.state.mark_dirty()
                return json_response(
                    {"id": view.id, "changeKey": view.change_key}, status=201
                )
        if len(rest) == 2 and rest[0] == "events" and method in {"PATCH", "DELETE"}:
            with self.state.lock:
                cals = self.store.calendars(email)
                if method == "PATCH":
                    body = await read_json_object(request)
                    view = cals.update(rest[1], body, if_match=None, now=now)
                    notify(
                        self._actor(email),
                        "events",
                        view.event.calendar_id,
                        "updated",
                        view.id,
                        view.etag,
                    )
                    self.state.mark_dirty()
                    return json_response({"id": view.id, "changeKey": view.change_key})
                view = cals.view(rest[1])
                notified, change = cals.delete(rest[1], if_match=None, now=now)
                master = cals.data.events.get(notified)
                etag = f'W/"{master.change_key}"' if master else view.etag
                notify(
                    self._actor(email),
                    "events",
                    view.event.calendar_id,
                    change,
                    notified,
                    etag,
                )
                self.state.mark_dirty()
                return json_response({"deleted": rest[1]})
        if (
            len(rest) == 3
            and rest[0] == "events"
            and rest[2] == "touch"
            and method == "POST"
        ):
            with self.state.lock:
                view = self.store.calendars(email).touch(rest[1], now)
                notify(
                    self._actor(email),
                    "events",
                    view.event.calendar_id,
                    "updated",
                    view.id,
                    view.etag,
                )
                self.state.mark_dirty()
                return json_response({"id": view.id, "changeKey": view.change_key})
        if rest == ["messages"] and method == "POST":
            body = await read_json_object(request)
            message = body.get("message") or body
            sender = body.get("from") or "someone@external.example"
            with self.state.lock:
                box = self.store.mail(email)
                outgoing = box._new_message(
                    {k: v for k, v in message.items() if k != "from"},
                    folder=box.folder("inbox"),
                    now=now,
                    draft=False,
                )
                outgoing.sender = {"emailAddress": {"name": sender, "address": sender}}
                if not outgoing.recipients.get("toRecipients"):
                    outgoing.recipients["toRecipients"] = [
                        {"emailAddress": {"name": email, "address": email}}
                    ]
                delivered = box.deliver(outgoing, now)
                notify(
                    self._actor(email),
                    "messages",
                    delivered.folder_id,
                    "created",
                    delivered.id,
                    f'W/"{delivered.change_key}"',
                )
                self.state.mark_dirty()
                return json_response(
                    {"id": delivered.id, "immutableId": delivered.immutable_id},
                    status=201,
                )
        raise ControlError(
            404,
            f"no control endpoint {method} /_sandbox/users/{email}/{'/'.join(rest)}",
        )

    def lifecycle(self, subscription_id: str, body: dict[str, Any]) -> Response:
        """``POST /subscriptions/{id}/lifecycle``."""
        event = str(body.get("event", ""))
        if event not in LIFECYCLE_EVENTS:
            raise ControlError(
                400, f"event must be one of {', '.join(LIFECYCLE_EVENTS)}"
            )
        with self.state.lock:
            subs = self.store.data.subscriptions.subscriptions
            sub = subs.get(subscription_id)
            if sub is None:
                raise ControlError(404, f"no subscription {subscription_id}")
            if not sub.lifecycle_url:
                raise ControlError(
                    409, "the subscription has no lifecycleNotificationUrl"
                )
            self.app.dispatcher.enqueue(
                sub.lifecycle_url,
                lifecycle_item(sub, event, tenant_of(sub.email)),
                sub.id,
                lifecycle=True,
            )
            if event == "subscriptionRemoved":
                del subs[sub.id]
            self.state.mark_dirty()
        return json_response({"queued": event})


def _fault_json(fault: Fault) -> dict[str, Any]:
    return {
        "id": fault.id,
        "kind": fault.kind.value,
        "user": fault.user,
        "api": fault.api,
        "method": fault.method,
        "count": fault.count,
        "rate": fault.rate,
        "retry_after_s": fault.retry_after_s,
        "latency_ms": fault.latency_ms,
        "fired": fault.fired,
    }
