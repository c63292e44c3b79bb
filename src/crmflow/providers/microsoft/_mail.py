"""One Outlook mailbox over Microsoft Graph v1.0 as a ``MailProvider``.

Plain httpx on the calendar adapter's plumbing (:mod:`._http`). Facts relied
on (microsoft-graph.md §7):

**Sending** (:meth:`GraphMailbox.send`)

* The message becomes a draft (``POST /me/messages``) sent with
  ``Prefer: IdType="ImmutableId"``: that id survives the move to Sent Items,
  so attachments, ``/send`` and the read-back below all use it.
* The draft carries the CRM's Message-ID as ``internetMessageId`` (Graph:
  "updatable only if isDraft = true") so the sent copy is recognized later.
  In-Reply-To and References go into the MAPI properties PidTagInReplyToId
  (``String 0x1042``) and PidTagInternetReferences (``String 0x1039``):
  ``internetMessageHeaders`` only takes ``x-`` headers.
* Attachments under 3 MB are POSTed as ``#microsoft.graph.fileAttachment``
  with ``contentBytes``; larger ones go through
  ``attachments/createUploadSession`` and ranged PUTs of
  :data:`UPLOAD_CHUNK_BYTES` (a multiple of 320 KiB, ``Content-Range``) to
  the session's upload URL. These PUTs carry no ``Authorization`` header: the
  URL holds its own token, and it points at another host (outlook.office.com).
* ``POST /me/messages/{id}/send`` answers 202. Then the message is read by
  its immutable id *without* the ``Prefer`` header: the regular id Graph
  answers with is the one the Sent Items delta reports, and it is what
  :class:`SentMessage` carries. Graph sends asynchronously ("getting the
  message from Sent Items might not succeed immediately"): if that read fails,
  ``provider_id`` is None and the sent copy is matched by its Message-ID.
  Nothing raises after the 202, so a caller never sends twice because of it.
* Drafts need Mail.ReadWrite; a grant with only Mail.Send (the connect's
  default is Mail.Send + Mail.Read) gets 403 on ``POST /me/messages``. Then the
  message goes through ``POST /me/sendMail`` with its attachments inline,
  which caps them at 3 MB in total (beyond: ``MissingScope`` for
  Mail.ReadWrite) and returns no id (``provider_id`` None).
* A draft whose attachments or ``/send`` were refused (4xx) is deleted again
  (best effort; Graph moves it to Deleted Items). After a 5xx or a network
  error on ``/send`` the draft is left alone: the message may have gone out.

**Reading** (:meth:`GraphMailbox.fetch`)

* Message delta of ``mailFolders/inbox`` and ``mailFolders/sentitems``, one
  round each, pages of ``page_size`` (``Prefer: odata.maxpagesize``) followed
  by ``@odata.nextLink``; one :class:`MailBatch` per page, and only the last
  one (of Sent Items) carries the cursor, the JSON
  ``{"inbox": deltaLink, "sentitems": deltaLink}``.
* The first round asks for ``$filter=receivedDateTime ge <since>`` (the one
  filter message delta supports) and drops older messages itself too.
* Ids are regular ids (no ``Prefer: IdType``): they stay put while a message
  stays in its folder, and a move is an ``@removed`` in the old folder's delta
  (in ``MailBatch.removed``) and a new message where it went.
* A message whose only change was its read state comes back as a message
  (the caller upserts): delta does not say what changed.
* Attachments of a message with ``hasAttachments`` are listed
  (``/messages/{id}/attachments``); the listing carries ``contentBytes`` of
  file attachments, used as :attr:`IncomingAttachment.data`; otherwise
  :meth:`GraphMailbox.attachment` reads ``…/attachments/{id}/$value``.
* 410 or ``syncStateNotFound`` / ``resyncRequired`` -> ``CursorExpired``.

**What Graph cannot do**

* Threading of replies: ``conversationId`` is read-only, so a reply is put
  into the original's Outlook conversation only when made with
  ``/messages/{id}/createReply`` (not used: it writes its own body, subject
  and recipients, and the sandbox has no such endpoint). The recipients'
  clients thread by the In-Reply-To/References properties above; the sender's
  own copy may get a conversation of its own (``SentMessage.thread_id``).
* In-Reply-To and References of fetched messages: Graph has them only in
  ``internetMessageHeaders``, returned on a ``$select`` of one message, i.e.
  a request per message. Not fetched: ``in_reply_to`` is None and
  ``references`` empty; ``thread_id`` (``conversationId``) groups threads.
* The sender is the mailbox owner: Graph sends as the signed-in user, whatever
  ``OutgoingMessage.sender`` says. ``raw`` (the RFC 5322 form) is not used:
  the draft is built from the message's fields.

Errors: 400 and 413 -> ``ValidationFailed`` with Graph's message (sending and
marking); 403 ``ErrorAccessDenied`` -> ``MissingScope`` naming the permission
the call needs; 404 -> ``ItemNotFound``; 401 -> ``AuthError``; 429 and 503
with ``Retry-After`` -> ``RateLimited``; other 5xx and network errors ->
``TransientProviderError``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from crmflow.domain.mail import (
    Address,
    IncomingAttachment,
    IncomingMessage,
    MailBatch,
    MailFolder,
    MailProvider,
    OutgoingAttachment,
    OutgoingMessage,
    SentMessage,
)
from crmflow.domain.secret import Secret
from crmflow.errors import CrmflowError, ValidationFailed
from crmflow.providers._http import new_client, send_with_bearer, transport_error
from crmflow.providers.base import (
    CursorExpired,
    ItemNotFound,
    MissingScope,
    ProviderError,
    TransientProviderError,
)
from crmflow.providers.microsoft._calendar_mapping import parse_modified
from crmflow.providers.microsoft._http import (
    error_code,
    error_message,
    graph_error,
    json_object,
    same_origin,
    sync_state_lost,
)

MAIL_READ = "Mail.Read"
MAIL_READ_WRITE = "Mail.ReadWrite"
MAIL_SEND = "Mail.Send"
#: messages per delta page (``Prefer: odata.maxpagesize``)
PAGE_SIZE = 50
#: attachments this large or larger go through an upload session ("Files < 3
#: MB: POST …/attachments. Files 3-150 MB: createUploadSession")
UPLOAD_SESSION_BYTES = 3 * 1024 * 1024
#: one PUT of an upload session: Graph wants multiples of 320 KiB (and at most
#: 4 MB per request)
UPLOAD_CHUNK_BYTES = 10 * 320 * 1024

#: the folders whose delta is read, in order, with the folder the CRM sees
_FOLDERS = (("inbox", MailFolder.INBOX), ("sentitems", MailFolder.SENT))
_IMMUTABLE = {"Prefer": 'IdType="ImmutableId"'}
#: what a fetched message needs
_SELECT = ",".join(
    (
        "id",
        "conversationId",
        "internetMessageId",
        "subject",
        "from",
        "toRecipients",
        "ccRecipients",
        "bccRecipients",
        "receivedDateTime",
        "sentDateTime",
        "body",
        "isRead",
        "hasAttachments",
    )
)
#: MAPI properties PidTagInReplyToId and PidTagInternetReferences (PT_UNICODE)
_IN_REPLY_TO = "String 0x1042"
_REFERENCES = "String 0x1039"
#: 403 codes that mean "this grant may not do that"
_DENIED_CODES = frozenset(
    {"erroraccessdenied", "accessdenied", "authorization_requestdenied"}
)

AccessToken = Callable[[], Awaitable[Secret]]
_Item = dict[str, Any]


class GraphMailbox(MailProvider):
    """The signed-in user's Outlook mailbox.

    ``root`` is the Graph root (production ``https://graph.microsoft.com/v1.0``;
    sandbox ``{base}/v1.0``). ``token`` is awaited before every Graph request.
    ``transport`` replaces httpx's network (tests). ``page_size`` is the most
    messages one :class:`MailBatch` holds.
    """

    def __init__(
        self,
        root: str,
        token: AccessToken,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self._root = root.rstrip("/")
        self._token = token
        self._transport = transport
        self._page_size = page_size

    # ------------------------------------------------------------ port: sending

    async def send(self, message: OutgoingMessage, raw: bytes) -> SentMessage:
        """Send ``message`` (see the module docstring; ``raw`` is not used).

        Raises:
            ValidationFailed: the message breaks a rule (before any request) or
                Graph refused it (400, with Graph's message).
            MissingScope: the grant lacks Mail.Send (or Mail.ReadWrite for
                attachments of 3 MB or more in total).
            AuthError, RateLimited, TransientProviderError, ProviderError.
        """
        message.check()
        what = "Sending the message through Outlook"
        draft = _message_json(message)
        async with new_client(self._transport) as client:
            created = await self._call(
                "POST",
                self._root + "/me/messages",
                what,
                client=client,
                json=draft,
                headers=_IMMUTABLE,
            )
            if created.status_code == 403 and _denied(created):
                return await self._send_mail(message, draft, what, client)
            if created.status_code not in (200, 201):
                raise _failure(created, what, MAIL_READ_WRITE)
            made = _json_body(created, what)
            draft_id = str(made.get("id") or "")
            if not draft_id:
                raise ProviderError(f"{what}: Graph's draft has no id.")
            try:
                for attachment in message.attachments:
                    await self._attach(draft_id, attachment, what, client)
            except CrmflowError:
                await self._discard(draft_id, client)
                raise
            # a network error here propagates and leaves the draft: it may be sent
            sent = await self._call(
                "POST",
                self._message_url(draft_id) + "/send",
                what,
                client=client,
                headers=_IMMUTABLE,
            )
            if sent.status_code not in (200, 202):
                if sent.status_code < 500:
                    await self._discard(draft_id, client)
                raise _failure(sent, what, MAIL_SEND)
            return await self._sent_copy(draft_id, made, client)

    async def _send_mail(
        self,
        message: OutgoingMessage,
        draft: Mapping[str, Any],
        what: str,
        client: httpx.AsyncClient,
    ) -> SentMessage:
        """``POST /me/sendMail``, for a grant that may not create drafts."""
        total = sum(len(a.data) for a in message.attachments)
        if total >= UPLOAD_SESSION_BYTES:
            raise MissingScope(
                [MAIL_READ_WRITE],
                f"{what}: attachments of 3 MB or more need the permission to "
                f"read and change your email ({MAIL_READ_WRITE}). Use 'Grant "
                "access' to add it, or share large files as a link.",
            )
        body = {
            "message": {
                **draft,
                "attachments": [_file_attachment(a) for a in message.attachments],
            },
            "saveToSentItems": True,
        }
        response = await self._call(
            "POST", self._root + "/me/sendMail", what, client=client, json=body
        )
        if response.status_code not in (200, 202):
            raise _failure(response, what, MAIL_SEND)
        return SentMessage(provider_id=None)

    async def _attach(
        self,
        draft_id: str,
        attachment: OutgoingAttachment,
        what: str,
        client: httpx.AsyncClient,
    ) -> None:
        """Add one attachment to the draft (inline or through an upload session)."""
        url = self._message_url(draft_id) + "/attachments"
        if len(attachment.data) < UPLOAD_SESSION_BYTES:
            response = await self._call(
                "POST",
                url,
                what,
                client=client,
                json=_file_attachment(attachment),
                headers=_IMMUTABLE,
            )
            if response.status_code not in (200, 201):
                raise _failure(response, what, MAIL_READ_WRITE)
            return
        size = len(attachment.data)
        response = await self._call(
            "POST",
            url + "/createUploadSession",
            what,
            client=client,
            json={
                "AttachmentItem": {
                    "attachmentType": "file",
                    "name": attachment.filename,
                    "contentType": attachment.content_type,
                    "size": size,
                }
            },
            headers=_IMMUTABLE,
        )
        if response.status_code not in (200, 201):
            raise _failure(response, what, MAIL_READ_WRITE)
        upload_url = str(_json_body(response, what).get("uploadUrl") or "")
        if not self._may_upload_to(upload_url):
            raise ProviderError(f"{what}: Graph sent no usable upload URL.")
        for start in range(0, size, UPLOAD_CHUNK_BYTES):
            chunk = attachment.data[start : start + UPLOAD_CHUNK_BYTES]
            end = start + len(chunk) - 1
            answer = await _put(client, upload_url, chunk, start, end, size, what)
            if answer.status_code not in (200, 201, 202):
                raise _upload_failure(answer, what)

    def _may_upload_to(self, url: str) -> bool:
        """An upload URL must be HTTPS, or on Graph's own origin (the sandbox)."""
        scheme = urlsplit(url).scheme
        return scheme == "https" or (scheme == "http" and same_origin(self._root, url))

    async def _discard(self, draft_id: str, client: httpx.AsyncClient) -> None:
        """Delete a draft that was not sent (best effort: errors are ignored)."""
        with contextlib.suppress(ProviderError):
            await self._call(
                "DELETE",
                self._message_url(draft_id),
                "Deleting the unsent draft",
                client=client,
                headers=_IMMUTABLE,
            )

    async def _sent_copy(
        self, draft_id: str, draft: Mapping[str, Any], client: httpx.AsyncClient
    ) -> SentMessage:
        """The sent copy's regular id and conversation (never raises: it is sent)."""
        thread = _text(draft.get("conversationId"))
        try:
            response = await self._call(
                "GET",
                self._message_url(draft_id),
                "Reading the sent message",
                client=client,
                params={"$select": "id,conversationId"},
            )
        except ProviderError:
            return SentMessage(None, thread)
        if response.status_code != 200:
            return SentMessage(None, thread)
        try:
            found = response.json()
        except ValueError:
            return SentMessage(None, thread)
        if not isinstance(found, dict):
            return SentMessage(None, thread)
        return SentMessage(
            _text(found.get("id")), _text(found.get("conversationId")) or thread
        )

    # ------------------------------------------------------------ port: reading

    async def fetch(
        self, cursor: str | None, *, since: dt.datetime
    ) -> AsyncIterator[MailBatch]:
        """Changes since ``cursor``; with None, the messages received since
        ``since`` (see the module docstring).

        Raises:
            CursorExpired: Graph forgot a delta token, or ``cursor`` is not one
                of this mailbox: fetch again with None.
            MissingScope: the grant may not read mail.
            AuthError, RateLimited, TransientProviderError, ProviderError.
        """
        links = self._links(cursor)
        since_utc = _utc(since)
        done: dict[str, str] = {}
        async with new_client(self._transport) as client:
            for key, folder in _FOLDERS:
                last_folder = key == _FOLDERS[-1][0]
                pages = self._delta(key, links.get(key), since_utc, client)
                async for items, delta_link in pages:
                    messages, removed = await self._changes(
                        items, folder, since_utc if cursor is None else None, client
                    )
                    if delta_link is not None:
                        done[key] = delta_link
                        if last_folder:
                            yield MailBatch(
                                messages, removed, cursor=_dump_cursor(done)
                            )
                            continue
                    if messages or removed:
                        yield MailBatch(messages, removed)

    def _links(self, cursor: str | None) -> dict[str, str]:
        """The delta links of a stored cursor (empty for None).

        Raises:
            CursorExpired: not a cursor of this mailbox.
        """
        if cursor is None:
            return {}
        try:
            data = json.loads(cursor)
        except ValueError:
            data = None
        links: dict[str, str] = {}
        for key, _folder in _FOLDERS:
            link = data.get(key) if isinstance(data, dict) else None
            if not isinstance(link, str) or not same_origin(self._root, link):
                raise CursorExpired(
                    "This is not a mail change-feed position of this Outlook "
                    "mailbox; a full fetch is needed."
                )
            links[key] = link
        return links

    async def _delta(
        self,
        folder: str,
        link: str | None,
        since: dt.datetime,
        client: httpx.AsyncClient,
    ) -> AsyncIterator[tuple[list[_Item], str | None]]:
        """The pages of one delta round: items and, on the last page, the
        round's ``@odata.deltaLink``.

        Raises:
            CursorExpired: Graph forgot the token of a stored link.
            TransientProviderError: a fresh round lost its state (try again).
        """
        what = "Reading Outlook mail changes"
        initial = link is None
        url = link or f"{self._root}/me/mailFolders/{folder}/messages/delta"
        params: dict[str, str | int] | None = None
        if initial:
            params = {
                "$select": _SELECT,
                "$filter": f"receivedDateTime ge {_query_time(since)}",
            }
        headers = {"Prefer": f"odata.maxpagesize={self._page_size}"}
        while True:
            response = await self._call(
                "GET", url, what, client=client, params=params, headers=headers
            )
            if sync_state_lost(response):
                if initial:
                    raise TransientProviderError(
                        f"{what}: Graph lost a fresh change round; retrying later."
                    )
                raise CursorExpired(
                    f"{what}: Graph forgot the change-feed position; a full "
                    "fetch is needed."
                )
            if response.status_code != 200:
                raise _failure(response, what, MAIL_READ, user_input=False)
            page = json_object(response, what)
            items = [i for i in page.get("value") or () if isinstance(i, dict)]
            next_link = page.get("@odata.nextLink")
            delta_link = page.get("@odata.deltaLink")
            found = next_link or delta_link
            if not found or not same_origin(self._root, str(found)):
                raise ProviderError(f"{what}: Graph sent no usable delta link.")
            if not next_link:
                yield items, str(delta_link)
                return
            yield items, None
            url, params = str(next_link), None

    async def _changes(
        self,
        items: Sequence[_Item],
        folder: MailFolder,
        since: dt.datetime | None,
        client: httpx.AsyncClient,
    ) -> tuple[tuple[IncomingMessage, ...], tuple[str, ...]]:
        """One delta page as messages (with their attachments) and removed ids;
        messages received before ``since`` (when given) are left out."""
        messages: list[IncomingMessage] = []
        removed: list[str] = []
        for item in items:
            item_id = _text(item.get("id"))
            if item_id is None:
                continue
            if "@removed" in item:
                removed.append(item_id)
                continue
            received = parse_modified(item.get("receivedDateTime"))
            if since is not None and received is not None and received < since:
                continue
            attachments: tuple[IncomingAttachment, ...] = ()
            if item.get("hasAttachments"):
                listed = await self._attachments(item_id, client)
                if listed is None:
                    continue  # gone meanwhile: the next delta says where
                attachments = listed
            messages.append(_incoming(item, folder, attachments))
        return tuple(messages), tuple(removed)

    async def _attachments(
        self, message_id: str, client: httpx.AsyncClient
    ) -> tuple[IncomingAttachment, ...] | None:
        """The attachments of a message (None: the message is gone)."""
        what = "Reading the attachments of an Outlook message"
        url = self._message_url(message_id) + "/attachments"
        out: list[IncomingAttachment] = []
        while True:
            response = await self._call("GET", url, what, client=client)
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise _failure(response, what, MAIL_READ, user_input=False)
            page = json_object(response, what)
            for raw in page.get("value") or ():
                found = _attachment(raw) if isinstance(raw, dict) else None
                if found is not None:
                    out.append(found)
            next_link = page.get("@odata.nextLink")
            if not next_link:
                return tuple(out)
            if not same_origin(self._root, str(next_link)):
                raise ProviderError(f"{what}: Graph sent a foreign next link.")
            url = str(next_link)

    # ------------------------------------------------------------ port: the rest

    async def mark_read(self, provider_id: str, is_read: bool) -> None:
        """``PATCH /me/messages/{id}`` with ``isRead``.

        Raises:
            ItemNotFound: the message is gone (or moved: its id changed).
            MissingScope: the grant lacks Mail.ReadWrite.
            AuthError, RateLimited, TransientProviderError, ProviderError.
        """
        what = (
            "Marking an Outlook message read"
            if is_read
            else ("Marking an Outlook message unread")
        )
        async with new_client(self._transport) as client:
            response = await self._call(
                "PATCH",
                self._message_url(provider_id),
                what,
                client=client,
                json={"isRead": is_read},
            )
        if response.status_code not in (200, 204):
            raise _failure(response, what, MAIL_READ_WRITE)

    async def attachment(self, provider_id: str, attachment_id: str) -> bytes:
        """The bytes of ``…/attachments/{id}/$value``.

        Raises:
            ItemNotFound: the message or attachment is gone.
            MissingScope, AuthError, RateLimited, TransientProviderError.
        """
        what = "Downloading an Outlook attachment"
        url = (
            self._message_url(provider_id)
            + "/attachments/"
            + quote(attachment_id, safe="")
            + "/$value"
        )
        async with new_client(self._transport) as client:
            response = await self._call("GET", url, what, client=client)
        if response.status_code != 200:
            raise _failure(response, what, MAIL_READ, user_input=False)
        return response.content

    # ------------------------------------------------------------ helpers

    def _message_url(self, message_id: str) -> str:
        return f"{self._root}/me/messages/{quote(message_id, safe='')}"

    async def _call(
        self,
        method: str,
        url: str,
        what: str,
        *,
        client: httpx.AsyncClient,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        return await send_with_bearer(
            self._transport,
            self._token,
            method,
            url,
            what,
            params=params,
            json=json,
            headers=headers,
            client=client,
        )


# ---------------------------------------------------------------- HTTP helpers


async def _put(
    client: httpx.AsyncClient,
    url: str,
    chunk: bytes,
    start: int,
    end: int,
    size: int,
    what: str,
) -> httpx.Response:
    """One ranged PUT of an upload session, without the bearer token."""
    try:
        return await client.put(
            url,
            content=chunk,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"bytes {start}-{end}/{size}",
            },
        )
    except httpx.TransportError as exc:
        raise transport_error(exc, what) from None
    except httpx.HTTPError as exc:
        raise TransientProviderError(
            f"{what}: HTTP error ({type(exc).__name__}); retrying later."
        ) from None


def _denied(response: httpx.Response) -> bool:
    """Whether a 403 says the grant may not do this (not some other refusal)."""
    return (error_code(response) or "").lower() in _DENIED_CODES


def _failure(
    response: httpx.Response, what: str, scope: str, *, user_input: bool = True
) -> CrmflowError:
    """A failed Graph answer as crmflow's error; ``scope`` is the permission
    the call needs, ``user_input`` whether a 400 is about the user's message."""
    status = response.status_code
    if user_input and status in (400, 413):
        detail = error_message(response) or "Microsoft Graph refused the message."
        return ValidationFailed(f"{what}: {detail}")
    if status == 403 and _denied(response):
        return MissingScope(
            [scope],
            f"{what}: the connected account did not grant {scope}. Use 'Grant "
            "access' to add the permission.",
        )
    if status == 404:
        return ItemNotFound(f"{what}: the message no longer exists in Outlook.")
    return graph_error(response, what)


def _upload_failure(response: httpx.Response, what: str) -> ProviderError:
    """A refused PUT of an upload session (its URL carries its own token)."""
    status = response.status_code
    if status in (401, 403, 404, 410, 416):
        return ProviderError(
            f"{what}: Outlook refused a part of a large attachment ({status}); "
            "send the message again."
        )
    return graph_error(response, what)


def _json_body(response: httpx.Response, what: str) -> dict[str, Any]:
    """A 2xx answer's JSON object.

    Raises:
        TransientProviderError: unreadable.
    """
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise TransientProviderError(
            f"{what}: Graph sent an unreadable answer; retrying later."
        )
    return body


# ---------------------------------------------------------------- mapping


def _recipient(address: Address) -> dict[str, Any]:
    email: dict[str, str] = {"address": address.email}
    if address.name:
        email["name"] = address.name
    return {"emailAddress": email}


def _message_json(message: OutgoingMessage) -> dict[str, Any]:
    """The Graph message (draft or sendMail) for ``message``, without attachments."""
    if message.html is not None:
        body = {"contentType": "HTML", "content": message.html}
    else:
        body = {"contentType": "Text", "content": message.text}
    out: dict[str, Any] = {
        "subject": message.subject,
        "body": body,
        "toRecipients": [_recipient(a) for a in message.to],
        "ccRecipients": [_recipient(a) for a in message.cc],
        "bccRecipients": [_recipient(a) for a in message.bcc],
        "internetMessageId": message.message_id,
    }
    properties = []
    if message.in_reply_to:
        properties.append({"id": _IN_REPLY_TO, "value": message.in_reply_to})
    if message.references:
        properties.append({"id": _REFERENCES, "value": " ".join(message.references)})
    if properties:
        out["singleValueExtendedProperties"] = properties
    return out


def _file_attachment(attachment: OutgoingAttachment) -> dict[str, Any]:
    return {
        "@odata.type": "#microsoft.graph.fileAttachment",
        "name": attachment.filename,
        "contentType": attachment.content_type,
        "contentBytes": base64.b64encode(attachment.data).decode("ascii"),
    }


def _text(value: Any) -> str | None:
    return str(value) if isinstance(value, str) and value else None


def _address(raw: Any) -> Address | None:
    email = raw.get("emailAddress") if isinstance(raw, dict) else None
    if not isinstance(email, dict):
        return None
    address = email.get("address")
    if not isinstance(address, str) or not address:
        return None
    return Address(email=address, name=str(email.get("name") or ""))


def _addresses(raw: Any) -> tuple[Address, ...]:
    if not isinstance(raw, list):
        return ()
    found = (_address(item) for item in raw)
    return tuple(a for a in found if a is not None)


def _incoming(
    item: Mapping[str, Any],
    folder: MailFolder,
    attachments: tuple[IncomingAttachment, ...],
) -> IncomingMessage:
    """A delta item as the CRM stores it."""
    body = item.get("body")
    if not isinstance(body, dict):
        body = {}
    raw_content = body.get("content")
    content = raw_content if isinstance(raw_content, str) else None
    is_html = str(body.get("contentType") or "").lower() == "html"
    received = parse_modified(item.get("receivedDateTime"))
    sent = parse_modified(item.get("sentDateTime"))
    date = (sent or received) if folder is MailFolder.SENT else (received or sent)
    return IncomingMessage(
        provider_id=str(item["id"]),
        folder=folder,
        thread_id=_text(item.get("conversationId")),
        message_id=_text(item.get("internetMessageId")),
        in_reply_to=None,
        references=(),
        subject=str(item.get("subject") or ""),
        sender=_address(item.get("from")),
        to=_addresses(item.get("toRecipients")),
        cc=_addresses(item.get("ccRecipients")),
        bcc=_addresses(item.get("bccRecipients")),
        date=date,
        text=None if is_html else content,
        html=content if is_html else None,
        is_read=bool(item.get("isRead", False)),
        attachments=attachments,
    )


def _attachment(raw: Mapping[str, Any]) -> IncomingAttachment | None:
    """A listed attachment (None: a link to a cloud file, no content)."""
    kind = str(raw.get("@odata.type") or "").lower()
    attachment_id = _text(raw.get("id"))
    if attachment_id is None or kind.endswith("referenceattachment"):
        return None
    data: bytes | None = None
    encoded = raw.get("contentBytes")
    if isinstance(encoded, str):
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            data = None
    content_type = _text(raw.get("contentType"))
    if kind.endswith("itemattachment"):
        content_type = content_type or "message/rfc822"
    size = raw.get("size")
    return IncomingAttachment(
        filename=_text(raw.get("name")),
        content_type=content_type or "application/octet-stream",
        size=size if isinstance(size, int) and size >= 0 else len(data or b""),
        content_id=_text(raw.get("contentId")),
        provider_attachment_id=attachment_id,
        data=data,
        inline=bool(raw.get("isInline", False)),
    )


def _utc(value: dt.datetime) -> dt.datetime:
    """``value`` in UTC, to the second (Graph's times and filters have seconds)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).replace(microsecond=0)


def _query_time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _dump_cursor(links: Mapping[str, str]) -> str:
    return json.dumps(
        {key: links[key] for key, _folder in _FOLDERS}, separators=(",", ":")
    )


__all__ = ["GraphMailbox"]
