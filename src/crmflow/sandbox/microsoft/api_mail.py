"""Graph mail endpoints: sendMail, drafts and send, messages, mail folders, message delta, attachments.

Rules live in :mod:`.mail` (microsoft-graph.md §7, checklist 22-23):

* ``POST /me/sendMail`` -> 202 with an empty body, JSON or MIME (``Content-Type:
  text/plain`` with a base64 MIME message; bad base64 is 400
  ``ErrorMimeContentInvalidBase64String`` "Invalid base64 string for MIME
  content."). Recipients who are sandbox users receive the message in their
  inbox.
* Lists: newest first, default page 10, ``$top`` ≤ 1000, ``$select``.
* ``/me/mailFolders/{id}/messages/delta``: ``$select`` and the custom
  ``changeType`` parameter are honoured; same nextLink / deltaLink /
  ``@removed`` / 410 semantics as events.
* The upload URL of an upload session lives under
  ``{base}/outlook/api/v2.0/…`` (real sessions point at outlook.office.com) and
  takes no Authorization header: the ``authtoken`` query parameter authorizes it.
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import secrets
from email.utils import getaddresses
from typing import Any

from starlette.responses import Response

from crmflow.sandbox.microsoft.api_calendar import read_body
from crmflow.sandbox.microsoft.api_notify import notify
from crmflow.sandbox.microsoft.delta import CurrentItem, Deltas, sync_state_not_found
from crmflow.sandbox.microsoft.errors import GraphError, bad_request
from crmflow.sandbox.microsoft.mail import MESSAGE_PROPERTIES, Mailboxes, StoredMessage
from crmflow.sandbox.microsoft.odata import (
    DEFAULT_PAGE_SIZE,
    check_select,
    next_link,
    parse_filter,
)
from crmflow.sandbox.microsoft.router import (
    MAIL_READ,
    MAIL_SEND,
    MAIL_WRITE,
    Context,
    GraphRoute,
)
from crmflow.sandbox.microsoft.timezones import format_utc

__all__ = ["ROUTES"]


def _mail(ctx: Context) -> Mailboxes:
    return ctx.store.mail(ctx.email)


def _render(
    ctx: Context, msg: StoredMessage, *, select: frozenset[str] | None = None
) -> dict[str, Any]:
    return _mail(ctx).render(
        msg,
        base=ctx.base_url,
        immutable=ctx.prefer_immutable_ids(),
        prefer_text=ctx.prefer_text_body(),
        select=select,
    )


def _resolver(msg: StoredMessage) -> Any:
    def resolve(path: str) -> Any:
        table: dict[str, Any] = {
            "subject": msg.subject,
            "isread": msg.is_read,
            "isdraft": msg.is_draft,
            "receiveddatetime": msg.received,
            "sentdatetime": msg.sent,
            "lastmodifieddatetime": msg.last_modified,
            "conversationid": msg.conversation_id,
            "internetmessageid": msg.internet_message_id,
            "hasattachments": any(not a.is_inline for a in msg.attachments),
            "importance": msg.importance,
            "categories": list(msg.categories),
            "from/emailaddress/address": (msg.sender or {})
            .get("emailAddress", {})
            .get("address"),
        }
        return table.get(path.casefold())

    return resolve


# -- sending ---------------------------------------------------------------------------------


def _deliver(ctx: Context, sent: StoredMessage) -> None:
    """Copy ``sent`` into the inbox of every sandbox recipient (under the lock)."""
    now = ctx.now()
    addresses = {
        r["emailAddress"]["address"].lower()
        for name in ("toRecipients", "ccRecipients", "bccRecipients")
        for r in sent.recipients.get(name, [])
    }
    for address in sorted(addresses):
        if address not in ctx.state.users:
            continue
        box = ctx.store.mail(address)
        copy_msg = box.deliver(sent, now)
        notify(
            ctx,
            "messages",
            copy_msg.folder_id,
            "created",
            copy_msg.id,
            f'W/"{copy_msg.change_key}"',
            email=address,
        )


def _mime_message(raw: bytes) -> dict[str, Any]:
    try:
        decoded = base64.b64decode(raw.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise GraphError(
            400,
            "ErrorMimeContentInvalidBase64String",
            "Invalid base64 string for MIME content.",
        ) from exc
    parsed = email.parser.BytesParser(policy=email.policy.default).parsebytes(decoded)
    body_part = parsed.get_body(preferencelist=("html", "plain"))
    content = body_part.get_content() if body_part is not None else ""
    kind = (
        "html"
        if body_part is not None and body_part.get_content_subtype() == "html"
        else "text"
    )

    def recipients(header: str) -> list[dict[str, Any]]:
        return [
            {"emailAddress": {"name": name or addr, "address": addr}}
            for name, addr in getaddresses(parsed.get_all(header, []))
            if addr
        ]

    return {
        "subject": str(parsed.get("subject", "")),
        "body": {"contentType": kind, "content": str(content)},
        "toRecipients": recipients("to"),
        "ccRecipients": recipients("cc"),
        "bccRecipients": recipients("bcc"),
    }


async def send_mail(ctx: Context) -> Response:
    """``POST /me/sendMail`` -> 202, no body."""
    content_type = ctx.request.headers.get("content-type", "")
    if content_type.lower().startswith("text/plain"):
        message = _mime_message(await ctx.request.body())
        save = True
    else:
        body = await read_body(ctx)
        raw_message = body.get("message")
        if not isinstance(raw_message, dict):
            raise bad_request(
                "The property 'message' is required.", code="ErrorInvalidParameter"
            )
        message = raw_message
        save_raw = body.get("saveToSentItems", True)
        # the docs' sample sends the string "false"
        save = not (
            save_raw is False
            or (isinstance(save_raw, str) and save_raw.lower() == "false")
        )
    with ctx.state.lock:
        sent = _mail(ctx).send_new(message, save=save, now=ctx.now())
        if save:
            notify(
                ctx,
                "messages",
                sent.folder_id,
                "created",
                sent.id,
                f'W/"{sent.change_key}"',
            )
        _deliver(ctx, sent)
        ctx.state.mark_dirty()
    return ctx.empty(202)


async def send_draft(ctx: Context) -> Response:
    """``POST /me/messages/{id}/send`` -> 202."""
    with ctx.state.lock:
        box = _mail(ctx)
        sent = box.send_draft(ctx.params["message-id"], ctx.now())
        notify(
            ctx,
            "messages",
            sent.folder_id,
            "created",
            sent.id,
            f'W/"{sent.change_key}"',
        )
        _deliver(ctx, sent)
        ctx.state.mark_dirty()
    return ctx.empty(202)


# -- messages ------------------------------------------------------------------------------------


def _page(ctx: Context, items: list[StoredMessage], context: str) -> Response:
    query = ctx.query
    check_select(query.select, MESSAGE_PROPERTIES, "microsoft.graph.message")
    if query.filter:
        predicate = parse_filter(query.filter)
        items = [m for m in items if predicate(_resolver(m))]
    if query.orderby:
        field, _, direction = query.orderby.strip().partition(" ")
        if field.casefold() not in {
            "receiveddatetime",
            "sentdatetime",
            "lastmodifieddatetime",
            "subject",
        }:
            raise GraphError(
                400, "BadRequest", f"The $orderby property '{field}' is not supported."
            )
        key = field.casefold()
        items = sorted(
            items,
            key=lambda m: (_resolver(m)(key) is None, _resolver(m)(key) or ""),
            reverse=direction.strip().casefold() == "desc",
        )
    size = query.top or ctx.max_page_size() or DEFAULT_PAGE_SIZE
    start = query.skip
    body: dict[str, Any] = {"@odata.context": ctx.context_url(context), "value": []}
    if ctx.short_page():
        body["@odata.nextLink"] = next_link(ctx.request_url(), ctx.raw_params, start)
        return ctx.json(body)
    body["value"] = [
        _render(ctx, m, select=query.select) for m in items[start : start + size]
    ]
    if start + size < len(items):
        body["@odata.nextLink"] = next_link(
            ctx.request_url(), ctx.raw_params, start + size
        )
    return ctx.json(body)


async def list_messages(ctx: Context) -> Response:
    """``GET /me/messages`` or ``/me/mailFolders/{id}/messages``."""
    with ctx.state.lock:
        box = _mail(ctx)
        folder_key = ctx.params.get("mailFolder-id")
        folder_id = box.folder(folder_key).id if folder_key else None
        return _page(ctx, box.in_folder(folder_id), f"{ctx.user_segment()}/messages")


async def create_message(ctx: Context) -> Response:
    """``POST /me/messages`` (a draft) -> 201."""
    body = await read_body(ctx)
    with ctx.state.lock:
        box = _mail(ctx)
        msg = box.create_draft(
            body, folder_key=ctx.params.get("mailFolder-id", "drafts"), now=ctx.now()
        )
        notify(
            ctx, "messages", msg.folder_id, "created", msg.id, f'W/"{msg.change_key}"'
        )
        ctx.state.mark_dirty()
        data = _render(ctx, msg)
    return ctx.json(
        {
            "@odata.context": ctx.context_url(f"{ctx.user_segment()}/messages/$entity"),
            **data,
        },
        status=201,
    )


async def get_message(ctx: Context) -> Response:
    """``GET /me/messages/{id}``."""
    with ctx.state.lock:
        check_select(ctx.query.select, MESSAGE_PROPERTIES, "microsoft.graph.message")
        msg = _mail(ctx).message(ctx.params["message-id"])
        data = _render(ctx, msg, select=ctx.query.select)
    return ctx.json(
        {
            "@odata.context": ctx.context_url(f"{ctx.user_segment()}/messages/$entity"),
            **data,
        }
    )


async def update_message(ctx: Context) -> Response:
    """``PATCH /me/messages/{id}`` -> 200."""
    body = await read_body(ctx)
    with ctx.state.lock:
        msg = _mail(ctx).update(
            ctx.params["message-id"],
            body,
            if_match=ctx.request.headers.get("if-match"),
            now=ctx.now(),
        )
        notify(
            ctx, "messages", msg.folder_id, "updated", msg.id, f'W/"{msg.change_key}"'
        )
        ctx.state.mark_dirty()
        data = _render(ctx, msg)
    return ctx.json(
        {
            "@odata.context": ctx.context_url(f"{ctx.user_segment()}/messages/$entity"),
            **data,
        }
    )


async def delete_message(ctx: Context) -> Response:
    """``DELETE /me/messages/{id}`` -> 204 (moved to Deleted Items)."""
    with ctx.state.lock:
        box = _mail(ctx)
        msg = box.message(ctx.params["message-id"])
        old_id, old_folder = msg.id, msg.folder_id
        box.delete(old_id, if_match=ctx.request.headers.get("if-match"), now=ctx.now())
        notify(ctx, "messages", old_folder, "deleted", old_id, f'W/"{msg.change_key}"')
        ctx.state.mark_dirty()
    return ctx.empty(204)


# -- folders ------------------------------------------------------------------------------------


async def list_folders(ctx: Context) -> Response:
    """``GET /me/mailFolders``."""
    with ctx.state.lock:
        box = _mail(ctx)
        box.ensure_folders()
        items = [box.render_folder(f) for f in box.data.folders.values()]
    return ctx.json(
        {
            "@odata.context": ctx.context_url(f"{ctx.user_segment()}/mailFolders"),
            "value": items,
        }
    )


async def get_folder(ctx: Context) -> Response:
    """``GET /me/mailFolders/{id | well-known name}``."""
    with ctx.state.lock:
        box = _mail(ctx)
        data = box.render_folder(box.folder(ctx.params["mailFolder-id"]))
    return ctx.json(
        {
            "@odata.context": ctx.context_url(
                f"{ctx.user_segment()}/mailFolders/$entity"
            ),
            **data,
        }
    )


# -- message delta --------------------------------------------------------------------------------


async def messages_delta(ctx: Context) -> Response:
    """``GET /me/mailFolders/{id}/messages/delta``."""
    params = ctx.raw_params
    now = ctx.now()
    settings = ctx.store.settings
    with ctx.state.lock:
        deltas = Deltas(
            ctx.store.data.delta,
            max_age_s=settings.delta_token_max_age_s,
            per_mailbox=settings.delta_tokens_per_mailbox,
        )
        box = _mail(ctx)
        folder = box.folder(ctx.params["mailFolder-id"])
        skiptoken = params.get("$skiptoken")
        deltatoken = params.get("$deltatoken")
        delta_path = f"{ctx.graph_base}/me/mailFolders/{folder.id}/messages/delta"
        if skiptoken:
            rnd, index = deltas.page(skiptoken, "messages")
        else:
            previous = None
            if deltatoken:
                try:
                    previous = deltas.token(deltatoken, "messages", now)
                except GraphError as exc:
                    raise sync_state_not_found(f"{delta_path}?$deltatoken=") from exc
                options = dict(previous.params)
            else:
                options = {
                    k: v
                    for k, v in params.items()
                    if k in {"$select", "changeType", "$top"}
                }
            check_select(
                frozenset(s.strip() for s in options["$select"].split(","))
                if options.get("$select")
                else None,
                MESSAGE_PROPERTIES,
                "microsoft.graph.message",
            )
            current = [
                CurrentItem(m.id, m.change_key, m.id) for m in box.in_folder(folder.id)
            ]
            size = ctx.max_page_size() or (
                int(options["$top"])
                if options.get("$top", "").isdigit()
                else DEFAULT_PAGE_SIZE
            )
            rnd = deltas.start_round(
                email=ctx.email,
                kind="messages",
                params=options | {"folder": folder.id},
                current=current,
                previous=previous,
                out_of_window=[],
                silent_removals=set(),
                next_seq=box.data.seq,
                page_size=size,
                now=now,
            )
            index = 0
        ctx.applied.append("odata.track-changes")
        select_raw = rnd.params.get("$select")
        select = (
            frozenset(s.strip() for s in select_raw.split(",")) if select_raw else None
        )
        wanted = {
            c.strip() for c in rnd.params.get("changeType", "").split(",") if c.strip()
        }
        values: list[dict[str, Any]] = []
        for entry in rnd.pages[index]:
            if wanted and entry.change not in wanted:
                continue
            if entry.removed:
                values.append(
                    {
                        "@odata.type": "#microsoft.graph.message",
                        "id": entry.id,
                        "@removed": {"reason": "deleted"},
                    }
                )
                continue
            found = box.data.messages.get(entry.id)
            if found is not None:
                values.append(_render(ctx, found, select=select))
        body: dict[str, Any] = {
            "@odata.context": ctx.context_url("Collection(message)"),
            "value": values,
        }
        if index + 1 < len(rnd.pages):
            body["@odata.nextLink"] = (
                f"{delta_path}?$skiptoken={Deltas.skiptoken(rnd, index + 1)}"
            )
        else:
            token = deltas.finish(rnd, now)
            body["@odata.deltaLink"] = f"{delta_path}?$deltatoken={token.token}"
        ctx.state.mark_dirty()
    return ctx.json(body)


# -- attachments ----------------------------------------------------------------------------------


async def list_attachments(ctx: Context) -> Response:
    """``GET /me/messages/{id}/attachments``."""
    with ctx.state.lock:
        msg = _mail(ctx).message(ctx.params["message-id"])
        items = [Mailboxes.render_attachment(a) for a in msg.attachments]
    return ctx.json(
        {
            "@odata.context": ctx.context_url(
                f"{ctx.user_segment()}/messages('{msg.id}')/attachments"
            ),
            "value": items,
        }
    )


async def add_attachment(ctx: Context) -> Response:
    """``POST /me/messages/{id}/attachments`` (< 3 MB) -> 201."""
    body = await read_body(ctx)
    with ctx.state.lock:
        box = _mail(ctx)
        att = box.add_attachment(ctx.params["message-id"], body, ctx.now())
        msg = box.message(ctx.params["message-id"])
        notify(
            ctx, "messages", msg.folder_id, "updated", msg.id, f'W/"{msg.change_key}"'
        )
        ctx.state.mark_dirty()
        data = Mailboxes.render_attachment(att)
    return ctx.json(
        {
            "@odata.context": ctx.context_url(
                f"{ctx.user_segment()}/messages('{msg.id}')/attachments/$entity"
            ),
            **data,
        },
        status=201,
    )


async def get_attachment(ctx: Context) -> Response:
    """``GET /me/messages/{id}/attachments/{aid}``."""
    with ctx.state.lock:
        att = _mail(ctx).attachment(
            ctx.params["message-id"], ctx.params["attachment-id"]
        )
        data = Mailboxes.render_attachment(att)
    return ctx.json(data)


async def get_attachment_value(ctx: Context) -> Response:
    """``GET …/attachments/{aid}/$value``: the raw bytes."""
    with ctx.state.lock:
        att = _mail(ctx).attachment(
            ctx.params["message-id"], ctx.params["attachment-id"]
        )
        raw = base64.b64decode(att.content_b64)
        media = att.content_type
    return Response(raw, media_type=media, headers=ctx.headers())


async def delete_attachment(ctx: Context) -> Response:
    """``DELETE …/attachments/{aid}`` -> 204."""
    with ctx.state.lock:
        _mail(ctx).delete_attachment(
            ctx.params["message-id"], ctx.params["attachment-id"], ctx.now()
        )
        ctx.state.mark_dirty()
    return ctx.empty(204)


async def create_upload_session(ctx: Context) -> Response:
    """``POST …/attachments/createUploadSession`` (3-150 MB) -> 201 uploadSession."""
    body = await read_body(ctx)
    with ctx.state.lock:
        box = _mail(ctx)
        session = box.create_upload_session(
            ctx.params["message-id"],
            body.get("AttachmentItem") or body.get("attachmentItem"),
            ctx.now(),
        )
        token = secrets.token_urlsafe(32)
        ctx.store.upload_tokens[token] = (ctx.email, session.id)
        msg = box.message(ctx.params["message-id"])
        url = (
            f"{ctx.base_url}/outlook/api/v2.0/Users('{ctx.email}')/Messages('{msg.immutable_id}')"
            f"/AttachmentSessions('{session.id}')?authtoken={token}"
        )
        ctx.state.mark_dirty()
        data = {
            "@odata.context": ctx.context_url("microsoft.graph.uploadSession"),
            "uploadUrl": url,
            "expirationDateTime": format_utc(session.expires),
            "nextExpectedRanges": ["0-"],
        }
    return ctx.json(data, status=201)


ROUTES: list[GraphRoute] = [
    GraphRoute("POST", "/me/sendMail", send_mail, "graph.mail.send", MAIL_SEND),
    GraphRoute("GET", "/me/messages", list_messages, "graph.messages.list", MAIL_READ),
    GraphRoute(
        "POST", "/me/messages", create_message, "graph.messages.create", MAIL_WRITE
    ),
    GraphRoute(
        "GET", "/me/messages/{message-id}", get_message, "graph.messages.get", MAIL_READ
    ),
    GraphRoute(
        "PATCH",
        "/me/messages/{message-id}",
        update_message,
        "graph.messages.update",
        MAIL_WRITE,
    ),
    GraphRoute(
        "DELETE",
        "/me/messages/{message-id}",
        delete_message,
        "graph.messages.delete",
        MAIL_WRITE,
    ),
    GraphRoute(
        "POST",
        "/me/messages/{message-id}/send",
        send_draft,
        "graph.messages.send",
        MAIL_SEND,
    ),
    GraphRoute(
        "GET",
        "/me/messages/{message-id}/attachments",
        list_attachments,
        "graph.attachments.list",
        MAIL_READ,
    ),
    GraphRoute(
        "POST",
        "/me/messages/{message-id}/attachments",
        add_attachment,
        "graph.attachments.create",
        MAIL_WRITE,
    ),
    GraphRoute(
        "GET",
        "/me/messages/{message-id}/attachments/{attachment-id}",
        get_attachment,
        "graph.attachments.get",
        MAIL_READ,
    ),
    GraphRoute(
        "DELETE",
        "/me/messages/{message-id}/attachments/{attachment-id}",
        delete_attachment,
        "graph.attachments.delete",
        MAIL_WRITE,
    ),
    GraphRoute(
        "GET",
        "/me/messages/{message-id}/attachments/{attachment-id}/$value",
        get_attachment_value,
        "graph.attachments.value",
        MAIL_READ,
    ),
    GraphRoute(
        "POST",
        "/me/messages/{message-id}/attachments/createUploadSession",
        create_upload_session,
        "graph.attachments.createUploadSession",
        MAIL_WRITE,
    ),
    GraphRoute(
        "GET", "/me/mailFolders", list_folders, "graph.mailFolders.list", MAIL_READ
    ),
    GraphRoute(
        "GET",
        "/me/mailFolders/{mailFolder-id}",
        get_folder,
        "graph.mailFolders.get",
        MAIL_READ,
    ),
    GraphRoute(
        "GET",
        "/me/mailFolders/{mailFolder-id}/messages",
        list_messages,
        "graph.messages.list",
        MAIL_READ,
    ),
    GraphRoute(
        "POST",
        "/me/mailFolders/{mailFolder-id}/messages",
        create_message,
        "graph.messages.create",
        MAIL_WRITE,
    ),
    GraphRoute(
        "GET",
        "/me/mailFolders/{mailFolder-id}/messages/delta",
        messages_delta,
        "graph.messages.delta",
        MAIL_READ,
    ),
]
