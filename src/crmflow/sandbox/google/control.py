"""Google's half of the control API (``{base}/_sandbox/...`` under the Google mount).

Out-of-band changes here behave "as if the person edited them in Google's own
apps": they go through the same rules as the API (etags, sync positions, push
notifications, history records) but need no token.

=================================================  ======  =============================================
path (below ``/_sandbox``)                         method  effect
=================================================  ======  =============================================
``/clients``                                       GET     registered OAuth clients (with secrets)
``/clients``                                       POST    ``{"client_id"?, "client_secret"?,
                                                           "redirect_uris", "testing"?, "name"?}``
``/tokens``                                        POST    ``{"email", "scopes", "client_id"?,
                                                           "offline"?=true}`` -> token-endpoint JSON
``/tokens/expire``                                 POST    ``{"email", "access"?=true, "refresh"?=true}``
``/grants/revoke``                                 POST    ``{"email", "client_id"?}``
``/calendars``                                     GET     ``?email=`` the user's calendars
``/calendars``                                     POST    ``{"email", "summary", "timeZone"}`` secondary
``/calendars/{calendarId}``                        PATCH   ``{"summary"?, "timeZone"?, "description"?}``
``/calendars/{calendarId}/events``                 GET     every stored event, tombstones included
``/calendars/{calendarId}/events``                 POST    insert an Event as the owner
``/calendars/{calendarId}/events/{eventId}``       PATCH   patch (instances too)
``/calendars/{calendarId}/events/{eventId}``       PUT     update
``/calendars/{calendarId}/events/{eventId}``       DELETE  delete (tombstone)
``/calendars/{calendarId}/expire-sync-tokens``     POST    every sync token so far -> 410
``/mailboxes/{email}``                             GET     ``{historyId, historyFloor, messages}``
``/mailboxes/{email}/messages``                    POST    deliver incoming mail (``raw`` or fields)
``/mailboxes/{email}/messages/{id}/modify``        POST    ``{"addLabelIds", "removeLabelIds"}``
``/mailboxes/{email}/messages/{id}``               DELETE  permanent delete (history messageDeleted)
``/mailboxes/{email}/expire-history``              POST    every history id so far -> 404
``/outbox``                                        GET     mail sent to non-sandbox addresses
``/channels``                                      GET     watch channels
``/notifications``                                 GET     push deliveries and their outcomes
=================================================  ======  =============================================
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formataddr
from typing import Any

from pydantic import TypeAdapter
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from crmflow.sandbox._http import ControlError, json_response, read_json_object
from crmflow.sandbox.control import control_endpoint
from crmflow.sandbox.google import mime
from crmflow.sandbox.google.errors import GoogleApiError
from crmflow.sandbox.google.eventtime import zone
from crmflow.sandbox.google.oauth import OAuthEndpoints
from crmflow.sandbox.google.push import Channel
from crmflow.sandbox.google.store import GoogleStore
from crmflow.sandbox.state import SandboxState

__all__ = ["compose_message", "google_control_routes"]

_CHANNEL = TypeAdapter(Channel)


def compose_message(fields: dict[str, Any]) -> bytes:
    """Build RFC 2822 bytes from control-API fields.

    Fields: ``from``, ``to`` (str or list), ``cc``, ``subject``, ``text``,
    ``html``, ``inReplyTo``, ``references``, ``messageId``, ``date``,
    ``attachments`` ([{``filename``, ``mimeType``, ``data`` (base64url)}]).
    """
    msg = EmailMessage()

    def addresses(value: Any) -> str:
        if isinstance(value, list):
            return ", ".join(str(v) for v in value)
        return str(value)

    msg["From"] = addresses(
        fields.get("from") or formataddr(("Sender", "sender@example.com"))
    )
    if fields.get("to"):
        msg["To"] = addresses(fields["to"])
    if fields.get("cc"):
        msg["Cc"] = addresses(fields["cc"])
    msg["Subject"] = str(fields.get("subject", ""))
    for key, header in (
        ("messageId", "Message-ID"),
        ("inReplyTo", "In-Reply-To"),
        ("references", "References"),
        ("date", "Date"),
    ):
        if fields.get(key):
            msg[header] = str(fields[key])
    msg.set_content(str(fields.get("text", "")))
    if fields.get("html"):
        msg.add_alternative(str(fields["html"]), subtype="html")
    for item in fields.get("attachments") or []:
        maintype, _, subtype = str(
            item.get("mimeType", "application/octet-stream")
        ).partition("/")
        msg.add_attachment(
            mime.unb64url(str(item.get("data", ""))),
            maintype=maintype,
            subtype=subtype or "octet-stream",
            filename=str(item.get("filename", "attachment")),
        )
    return msg.as_bytes()


def google_control_routes(
    state: SandboxState, oauth: OAuthEndpoints
) -> list[BaseRoute]:
    """Routes relative to the ``/_sandbox`` mount of the Google app."""

    def store() -> GoogleStore:
        return state.extension(GoogleStore)

    def now_ms() -> int:
        return state.clock.now_ms()

    def owner_calendar(calendar_id: str) -> Any:
        cal = store().calendars.data.calendars.get(calendar_id)
        if cal is None:
            with state.lock:
                if calendar_id in state.users:
                    return store().calendars.ensure_primary(calendar_id)
            raise ControlError(404, f"no calendar {calendar_id}")
        return cal

    def api_error(exc: GoogleApiError) -> Response:
        # Out-of-band edits obey the API's rules and report its errors as is.
        return exc.response()

    @control_endpoint
    async def clients(request: Request) -> Response:
        identity = store().identity
        if request.method == "GET":
            with state.lock:
                return json_response(
                    {
                        "clients": [
                            c.public_json() for c in identity.data.clients.values()
                        ]
                    }
                )
        body = await read_json_object(request)
        uris = body.get("redirect_uris", [])
        if not isinstance(uris, list):
            raise ControlError(400, "redirect_uris must be a list")
        with state.lock:
            client = identity.register_client(
                client_id=body.get("client_id"),
                client_secret=body.get("client_secret"),
                redirect_uris=[str(u) for u in uris],
                testing=bool(body.get("testing", False)),
                name=str(body.get("name") or "crmflow"),
            )
            state.mark_dirty()
            return json_response(client.public_json(), status=201)

    @control_endpoint
    async def tokens(request: Request) -> Response:
        body = await read_json_object(request)
        email, scopes = body.get("email"), body.get("scopes")
        if not isinstance(email, str) or not isinstance(scopes, list) or not scopes:
            raise ControlError(400, "email and a non-empty scopes list are required")
        try:
            out = oauth.issue_for_control(
                email,
                [str(s) for s in scopes],
                client_id=body.get("client_id"),
                offline=bool(body.get("offline", True)),
            )
        except KeyError as exc:
            raise ControlError(404, f"no client {exc}") from exc
        return json_response(out)

    @control_endpoint
    async def tokens_expire(request: Request) -> Response:
        body = await read_json_object(request)
        email = str(body.get("email", "")).lower()
        with state.lock:
            count = store().identity.expire_tokens(
                email,
                access=bool(body.get("access", True)),
                refresh=bool(body.get("refresh", True)),
            )
            state.mark_dirty()
        return json_response({"expired": count})

    @control_endpoint
    async def grants_revoke(request: Request) -> Response:
        body = await read_json_object(request)
        email = str(body.get("email", "")).lower()
        with state.lock:
            count = store().identity.revoke_grant(email, body.get("client_id"))
            state.mark_dirty()
        return json_response({"revoked": count})

    @control_endpoint
    async def calendars(request: Request) -> Response:
        cals = store().calendars
        if request.method == "GET":
            email = request.query_params.get("email", "").lower()
            with state.lock:
                return json_response(
                    {
                        "items": [
                            cals.render_list_entry(c, email)
                            for c in cals.user_calendars(email)
                        ]
                    }
                )
        body = await read_json_object(request)
        email = str(body.get("email", "")).lower()
        user = state.add_user(email)
        with state.lock:
            cal = cals.add_calendar(
                user.email,
                summary=str(body.get("summary") or "Calendar"),
                time_zone=str(body.get("timeZone") or "UTC"),
            )
            state.mark_dirty()
            return json_response(cals.render_list_entry(cal, user.email), status=201)

    @control_endpoint
    async def calendar_item(request: Request) -> Response:
        body = await read_json_object(request)
        with state.lock:
            cal = owner_calendar(request.path_params["calendar_id"])
            if "timeZone" in body:
                zone(str(body["timeZone"]))
                cal.time_zone = str(body["timeZone"])
            if "summary" in body:
                cal.summary = str(body["summary"])
            if "description" in body:
                cal.description = str(body["description"])
            state.mark_dirty()
            return json_response(store().calendars.render_list_entry(cal, cal.owner))

    @control_endpoint
    async def events(request: Request) -> Response:
        cals = store().calendars
        with state.lock:
            cal = owner_calendar(request.path_params["calendar_id"])
            if request.method == "GET":
                items = [
                    cals.render(cal, cals.view(cal, e), tz=cal.tz())
                    for e in sorted(cal.events)
                ]
                return json_response({"items": items})
        body = await read_json_object(request)
        with state.lock:
            try:
                ev = cals.insert(cal, body, now_ms=now_ms())
            except GoogleApiError as exc:
                return api_error(exc)
            return json_response(
                cals.render(cal, cals.view(cal, ev.id), tz=cal.tz()), status=201
            )

    @control_endpoint
    async def event_item(request: Request) -> Response:
        cals = store().calendars
        event_id = request.path_params["event_id"]
        body = await read_json_object(request) if request.method != "DELETE" else {}
        with state.lock:
            cal = owner_calendar(request.path_params["calendar_id"])
            try:
                if request.method == "DELETE":
                    cals.delete(cal, event_id, if_match=None, now_ms=now_ms())
                    return Response(status_code=204)
                view = cals.write(
                    cal,
                    event_id,
                    body,
                    patch=request.method == "PATCH",
                    if_match=None,
                    now_ms=now_ms(),
                )
            except GoogleApiError as exc:
                return api_error(exc)
            return json_response(cals.render(cal, view, tz=cal.tz()))

    @control_endpoint
    async def expire_sync_tokens(request: Request) -> Response:
        with state.lock:
            cal = owner_calendar(request.path_params["calendar_id"])
            store().calendars.expire_sync_tokens(cal, now_ms())
            state.mark_dirty()
        return Response(status_code=204)

    def mailbox_of(request: Request) -> Any:
        email = request.path_params["email"].lower()
        if email not in state.users:
            raise ControlError(404, f"no user {email}")
        return store().mail.mailbox(email)

    @control_endpoint
    async def mailbox(request: Request) -> Response:
        with state.lock:
            box = mailbox_of(request)
            return json_response(
                {
                    "email": box.email,
                    "historyId": str(box.history_id),
                    "historyFloor": str(box.history_floor),
                    "messages": [
                        {
                            "id": m.id,
                            "threadId": m.thread_id,
                            "labelIds": m.label_ids,
                            "subject": m.subject,
                        }
                        for m in box.messages.values()
                    ],
                }
            )

    @control_endpoint
    async def deliver(request: Request) -> Response:
        body = await read_json_object(request)
        raw_b64 = body.get("raw")
        raw = mime.unb64url(str(raw_b64)) if raw_b64 else compose_message(body)
        labels = body.get("labelIds")
        with state.lock:
            box = mailbox_of(request)
            msg = store().mail.receive(
                box,
                raw,
                labels=[str(x) for x in labels] if isinstance(labels, list) else None,
                now_ms=now_ms(),
            )
            state.mark_dirty()
            return json_response(
                {"id": msg.id, "threadId": msg.thread_id, "labelIds": msg.label_ids},
                status=201,
            )

    @control_endpoint
    async def modify(request: Request) -> Response:
        body = await read_json_object(request)
        with state.lock:
            box = mailbox_of(request)
            mail = store().mail
            try:
                msg = mail.message(box, request.path_params["message_id"])
                mail.modify(
                    box,
                    msg,
                    list(body.get("addLabelIds") or []),
                    list(body.get("removeLabelIds") or []),
                )
            except GoogleApiError as exc:
                return api_error(exc)
            state.mark_dirty()
            return json_response(
                {"id": msg.id, "threadId": msg.thread_id, "labelIds": msg.label_ids}
            )

    @control_endpoint
    async def delete_message(request: Request) -> Response:
        with state.lock:
            box = mailbox_of(request)
            mail = store().mail
            try:
                mail.delete(box, mail.message(box, request.path_params["message_id"]))
            except GoogleApiError as exc:
                return api_error(exc)
            state.mark_dirty()
        return Response(status_code=204)

    @control_endpoint
    async def expire_history(request: Request) -> Response:
        with state.lock:
            box = mailbox_of(request)
            store().mail.expire_history(box)
            state.mark_dirty()
            return json_response({"historyId": str(box.history_id)})

    @control_endpoint
    async def outbox(request: Request) -> Response:
        with state.lock:
            return json_response({"messages": list(store().mail.data.outbox)})

    @control_endpoint
    async def channels(request: Request) -> Response:
        with state.lock:
            return json_response(
                {
                    "channels": [
                        _CHANNEL.dump_python(c, mode="json")
                        for c in store().push_data.channels.values()
                    ]
                }
            )

    @control_endpoint
    async def notifications(request: Request) -> Response:
        with state.lock:
            return json_response(
                {"notifications": [d.as_json() for d in store().push.deliveries]}
            )

    return [
        Route("/clients", clients, methods=["GET", "POST"]),
        Route("/tokens", tokens, methods=["POST"]),
        Route("/tokens/expire", tokens_expire, methods=["POST"]),
        Route("/grants/revoke", grants_revoke, methods=["POST"]),
        Route("/calendars", calendars, methods=["GET", "POST"]),
        Route("/calendars/{calendar_id}", calendar_item, methods=["PATCH"]),
        Route("/calendars/{calendar_id}/events", events, methods=["GET", "POST"]),
        Route(
            "/calendars/{calendar_id}/events/{event_id}",
            event_item,
            methods=["PATCH", "PUT", "DELETE"],
        ),
        Route(
            "/calendars/{calendar_id}/expire-sync-tokens",
            expire_sync_tokens,
            methods=["POST"],
        ),
        Route("/mailboxes/{email}", mailbox, methods=["GET"]),
        Route("/mailboxes/{email}/messages", deliver, methods=["POST"]),
        Route(
            "/mailboxes/{email}/messages/{message_id}/modify", modify, methods=["POST"]
        ),
        Route(
            "/mailboxes/{email}/messages/{message_id}",
            delete_message,
            methods=["DELETE"],
        ),
        Route("/mailboxes/{email}/expire-history", expire_history, methods=["POST"]),
        Route("/outbox", outbox, methods=["GET"]),
        Route("/channels", channels, methods=["GET"]),
        Route("/notifications", notifications, methods=["GET"]),
    ]
