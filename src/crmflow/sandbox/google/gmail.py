"""Gmail API v1 over HTTP: profile, messages, attachments, threads, labels, history.

Handlers translate :class:`~crmflow.sandbox.google.api.ApiCall` into
:class:`~crmflow.sandbox.google.mail.Mail` operations. Errors use the AIP-193
envelope of gmail.googleapis.com (with ``status``). Scope subtleties from the
reference: ``q`` is "not allowed with gmail.metadata scope", and formats
``full``/``raw`` are not allowed with it either.
"""

from __future__ import annotations

from typing import Any

from crmflow.sandbox.faults import FaultKind
from crmflow.sandbox.google import errors, mime
from crmflow.sandbox.google.api import ApiCall, ApiService, JsonResult
from crmflow.sandbox.google.errors import GoogleApiError
from crmflow.sandbox.google.mail import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    SYSTEM_LABELS,
    Mailbox,
    StoredMessage,
    page_token,
    read_page_token,
)
from crmflow.sandbox.specs.discovery import bundled_document

__all__ = ["gmail_service"]

_METADATA_SCOPE = "https://www.googleapis.com/auth/gmail.metadata"


def _forbidden(message: str) -> GoogleApiError:
    return errors.error(403, "forbidden", message, flavor="aip")


def _metadata_only(call: ApiCall) -> bool:
    """True when the token's only Gmail read access is gmail.metadata."""
    scopes = call.principal.scopes & call.method.scopes
    return scopes == {_METADATA_SCOPE}


def _mailbox(call: ApiCall) -> Mailbox:
    user_id = call.path_params["userId"]
    if user_id not in ("me", call.principal.email):
        raise _forbidden(f"Delegation denied for {call.principal.email}")
    return call.store.mail.mailbox(call.principal.email)


def _page_size(call: ApiCall) -> int:
    size = int(call.params.get("maxResults", DEFAULT_PAGE_SIZE))
    return max(1, min(size, MAX_PAGE_SIZE))


def _after(items: list[StoredMessage], token: str | None) -> list[StoredMessage]:
    if token is None:
        return items
    key = read_page_token(token)
    if len(key) != 2 or type(key[0]) is not int or not isinstance(key[1], str):
        raise errors.bad_request(
            "Invalid pageToken", flavor="aip", reason="invalidArgument"
        )
    marker = (key[0], key[1])
    return [m for m in items if (m.internal_date_ms, m.id) < marker]


def _body(call: ApiCall) -> dict[str, Any]:
    if not isinstance(call.body, dict):
        raise errors.bad_request(
            "Invalid JSON payload received.", flavor="aip", reason="invalid"
        )
    return call.body


def gmail_service() -> ApiService:
    """Build the Gmail v1 service with all implemented handlers."""
    service = ApiService(
        bundled_document("gmail"),
        api_name="gmail",
        flavor="aip",
        esf_service="gmail.googleapis.com",
        base_path="",
    )

    @service.route("gmail.users.getProfile")
    async def get_profile(call: ApiCall) -> JsonResult:
        with call.state.lock:
            box = _mailbox(call)
            return {
                "emailAddress": box.email,
                "messagesTotal": len(box.messages),
                "threadsTotal": len({m.thread_id for m in box.messages.values()}),
                "historyId": str(box.history_id),
            }

    @service.route("gmail.users.messages.send")
    async def messages_send(call: ApiCall) -> JsonResult:
        body = _body(call)
        with call.state.lock:
            box = _mailbox(call)
            mail = call.store.mail
            if call.media is not None:
                msg = mail.send_bytes(
                    box,
                    call.media,
                    thread_id=body.get("threadId"),
                    now=call.state.clock.now(),
                    sandbox_users=set(call.state.users),
                    mailbox_of=mail.mailbox,
                )
                call.state.mark_dirty()
                return {
                    "id": msg.id,
                    "threadId": msg.thread_id,
                    "labelIds": list(msg.label_ids),
                }
            msg = mail.send(
                box,
                body.get("raw"),
                thread_id=body.get("threadId"),
                now=call.state.clock.now(),
                sandbox_users=set(call.state.users),
                mailbox_of=mail.mailbox,
            )
            call.state.mark_dirty()
            return {
                "id": msg.id,
                "threadId": msg.thread_id,
                "labelIds": list(msg.label_ids),
            }

    @service.route("gmail.users.messages.list")
    async def messages_list(call: ApiCall) -> JsonResult:
        q = call.params.get("q")
        if q and _metadata_only(call):
            raise _forbidden("Metadata scope does not support 'q' parameter")
        with call.state.lock:
            box = _mailbox(call)
            found = call.store.mail.search(
                box,
                q=q,
                label_ids=list(call.params.get("labelIds", [])),
                include_spam_trash=bool(call.params.get("includeSpamTrash", False)),
                now_ms=call.state.clock.now_ms(),
            )
            total = len(found)
            rest = _after(found, call.params.get("pageToken"))
            size = _page_size(call)
            page = [] if FaultKind.SHORT_PAGE in call.faults else rest[:size]
            out: dict[str, Any] = {}
            if page:
                out["messages"] = [{"id": m.id, "threadId": m.thread_id} for m in page]
            if len(rest) > len(page):
                last = page[-1] if page else None
                key = (
                    [last.internal_date_ms, last.id]
                    if last
                    else _token_key(call.params.get("pageToken"))
                )
                out["nextPageToken"] = page_token(key)
            out["resultSizeEstimate"] = total
            return out

    @service.route("gmail.users.messages.get")
    async def messages_get(call: ApiCall) -> JsonResult:
        fmt = str(call.params.get("format", "full"))
        if fmt in ("full", "raw") and _metadata_only(call):
            raise _forbidden(f"Metadata scope doesn't allow format {fmt.upper()}")
        with call.state.lock:
            box = _mailbox(call)
            msg = call.store.mail.message(box, call.path_params["id"])
            return call.store.mail.render_message(
                msg,
                fmt=fmt,
                metadata_headers=list(call.params.get("metadataHeaders", [])),
            )

    @service.route("gmail.users.messages.modify")
    async def messages_modify(call: ApiCall) -> JsonResult:
        body = _body(call)
        with call.state.lock:
            box = _mailbox(call)
            mail = call.store.mail
            msg = mail.message(box, call.path_params["id"])
            mail.modify(
                box,
                msg,
                list(body.get("addLabelIds") or []),
                list(body.get("removeLabelIds") or []),
            )
            call.state.mark_dirty()
            return {
                "id": msg.id,
                "threadId": msg.thread_id,
                "labelIds": list(msg.label_ids),
            }

    async def trash(call: ApiCall, *, into: bool) -> JsonResult:
        with call.state.lock:
            box = _mailbox(call)
            mail = call.store.mail
            msg = mail.message(box, call.path_params["id"])
            if into:
                mail.modify(box, msg, ["TRASH"], ["INBOX", "SPAM"])
            else:
                mail.modify(box, msg, [], ["TRASH"])
            call.state.mark_dirty()
            return {
                "id": msg.id,
                "threadId": msg.thread_id,
                "labelIds": list(msg.label_ids),
            }

    @service.route("gmail.users.messages.trash")
    async def messages_trash(call: ApiCall) -> JsonResult:
        return await trash(call, into=True)

    @service.route("gmail.users.messages.untrash")
    async def messages_untrash(call: ApiCall) -> JsonResult:
        return await trash(call, into=False)

    @service.route("gmail.users.messages.delete")
    async def messages_delete(call: ApiCall) -> JsonResult:
        with call.state.lock:
            box = _mailbox(call)
            mail = call.store.mail
            mail.delete(box, mail.message(box, call.path_params["id"]))
            call.state.mark_dirty()
        return None

    @service.route("gmail.users.messages.attachments.get")
    async def attachments_get(call: ApiCall) -> JsonResult:
        with call.state.lock:
            box = _mailbox(call)
            msg = call.store.mail.message(box, call.path_params["messageId"])
            data = mime.find_attachment(
                msg.id, mime.parse_message(msg.raw_bytes()), call.path_params["id"]
            )
            if data is None:
                raise errors.bad_request(
                    "Invalid attachment token", flavor="aip", reason="invalidArgument"
                )
            return {"size": len(data), "data": mime.b64url(data)}

    @service.route("gmail.users.threads.get")
    async def threads_get(call: ApiCall) -> JsonResult:
        fmt = str(call.params.get("format", "full"))
        if fmt == "full" and _metadata_only(call):
            raise _forbidden("Metadata scope doesn't allow format FULL")
        with call.state.lock:
            box = _mailbox(call)
            thread_id = call.path_params["id"]
            messages = sorted(
                (m for m in box.messages.values() if m.thread_id == thread_id),
                key=lambda m: (m.internal_date_ms, m.id),
            )
            if not messages:
                raise errors.not_found(flavor="aip")
            mail = call.store.mail
            headers = list(call.params.get("metadataHeaders", []))
            return {
                "id": thread_id,
                "historyId": str(max(m.history_id for m in messages)),
                "messages": [
                    mail.render_message(m, fmt=fmt, metadata_headers=headers)
                    for m in messages
                ],
            }

    @service.route("gmail.users.threads.list")
    async def threads_list(call: ApiCall) -> JsonResult:
        q = call.params.get("q")
        if q and _metadata_only(call):
            raise _forbidden("Metadata scope does not support 'q' parameter")
        with call.state.lock:
            box = _mailbox(call)
            mail = call.store.mail
            found = mail.search(
                box,
                q=q,
                label_ids=list(call.params.get("labelIds", [])),
                include_spam_trash=bool(call.params.get("includeSpamTrash", False)),
                now_ms=call.state.clock.now_ms(),
            )
            # One entry per thread, at the thread's newest matching message.
            newest: dict[str, StoredMessage] = {}
            for msg in found:
                newest.setdefault(msg.thread_id, msg)
            heads = list(newest.values())
            rest = _after(heads, call.params.get("pageToken"))
            size = _page_size(call)
            page = rest[:size]
            out: dict[str, Any] = {}
            if page:
                out["threads"] = [
                    {
                        "id": m.thread_id,
                        "snippet": mime.snippet(mime.parse_message(m.raw_bytes())),
                        "historyId": str(
                            max(
                                x.history_id
                                for x in box.messages.values()
                                if x.thread_id == m.thread_id
                            )
                        ),
                    }
                    for m in page
                ]
            if len(rest) > len(page):
                out["nextPageToken"] = page_token(
                    [page[-1].internal_date_ms, page[-1].id]
                )
            out["resultSizeEstimate"] = len(heads)
            return out

    @service.route("gmail.users.labels.list")
    async def labels_list(call: ApiCall) -> JsonResult:
        with call.state.lock:
            box = _mailbox(call)
            mail = call.store.mail
            ids = [*SYSTEM_LABELS, *box.labels]
            return {"labels": [mail.render_label(box, i, counts=False) for i in ids]}

    @service.route("gmail.users.labels.get")
    async def labels_get(call: ApiCall) -> JsonResult:
        with call.state.lock:
            box = _mailbox(call)
            mail = call.store.mail
            label_id = call.path_params["id"]
            if not mail.label_exists(box, label_id):
                raise errors.not_found(flavor="aip")
            return mail.render_label(box, label_id, counts=True)

    @service.route("gmail.users.labels.create")
    async def labels_create(call: ApiCall) -> JsonResult:
        body = _body(call)
        with call.state.lock:
            box = _mailbox(call)
            mail = call.store.mail
            label = mail.create_label(box, body)
            call.state.mark_dirty()
            return mail.render_label(box, label.id, counts=False)

    @service.route("gmail.users.history.list")
    async def history_list(call: ApiCall) -> JsonResult:
        start_raw = call.params.get("startHistoryId")
        if start_raw is None:
            raise errors.bad_request(
                "Required parameter: startHistoryId",
                flavor="aip",
                reason="invalidArgument",
            )
        start = int(start_raw)
        with call.state.lock:
            box = _mailbox(call)
            mail = call.store.mail
            # "Supplying an invalid or out of date startHistoryId typically
            # returns an HTTP 404" (sync guide).
            if start < box.history_floor:
                raise errors.not_found(flavor="aip")
            types = set(call.params.get("historyTypes", []))
            label_id = call.params.get("labelId")
            records = [
                r
                for r in box.history
                if r.id > start
                and (not types or r.kind in types)
                and (
                    label_id is None
                    or _touches_label(box, r.message_id, r.label_ids, label_id)
                )
            ]
            token = call.params.get("pageToken")
            if token is not None:
                key = read_page_token(token)
                if len(key) != 1 or type(key[0]) is not int:
                    raise errors.bad_request(
                        "Invalid pageToken", flavor="aip", reason="invalidArgument"
                    )
                records = [r for r in records if r.id > key[0]]
            size = _page_size(call)
            page = records[:size]
            out: dict[str, Any] = {}
            if page:
                out["history"] = [mail.render_history(r) for r in page]
            if len(records) > len(page):
                out["nextPageToken"] = page_token([page[-1].id])
            out["historyId"] = str(box.history_id)
            return out

    return service


def _touches_label(
    box: Mailbox, message_id: str, record_labels: list[str], label_id: str
) -> bool:
    if label_id in record_labels:
        return True
    msg = box.messages.get(message_id)
    return msg is not None and label_id in msg.label_ids


def _token_key(token: Any) -> list[Any]:
    if token is None:
        # Newer than any message: the next page starts at the top.
        return [2**62, ""]
    return read_page_token(str(token))
