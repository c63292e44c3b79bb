"""Gmail API v1 as a :class:`~crmflow.domain.mail.MailProvider` (google-apis.md §5.4, §6).

One mailbox (``users/me``) over plain httpx. Facts relied on:

* ``messages.send`` takes the RFC 5322 bytes as base64url ``raw``; a reply joins
  ``threadId`` only when its In-Reply-To/References and Subject match too
  (§6.2), so the raw message must carry them. An unknown ``threadId`` is 404:
  the message is then sent as a new conversation.
* A full fetch reads ``getProfile.historyId`` *before* listing (§6.3: "a valid
  starting point"): a message arriving during the listing is reported again by
  the next incremental fetch instead of being lost (the caller de-duplicates).
  ``messages.list`` (``q=after:<epoch seconds>``, spam and trash left out)
  gives ids only; bodies come from ``messages.get?format=raw``, several per
  request through the batch endpoint (``batch/gmail/v1``).
* ``history.list`` from the cursor with the four history types gives added and
  deleted messages and label changes in chronological order; the cursor is the
  last page's ``historyId``. A history id Gmail no longer keeps is 404 ->
  ``CursorExpired`` (§6.3: "perform a full sync"). A message added and deleted
  before it is read answers 404 and is skipped; its deletion is in the history.
* Bcc recipients are not in the composed bytes; Gmail reads recipients from
  the headers, so ``send`` adds a ``Bcc`` header (Gmail strips it from what
  the recipients get).
* Drafts, spam, trash and chat are not mail the CRM imports. ``SENT`` makes a
  message outbound; ``UNREAD`` is the read flag.
* Errors (§5.4): 400 on send -> ``ValidationFailed`` with Gmail's message;
  401 -> ``AuthError``; 403 ``insufficientPermissions`` -> ``MissingScope``;
  429 and 403 rate/quota reasons -> ``RateLimited`` with ``Retry-After``; 5xx
  and network errors -> ``TransientProviderError``.

Sending is not idempotent: after a network error the message may have been
sent; the sent copy carries the CRM's Message-ID, so the caller can find it.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from email.message import Message
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import httpx

from crmflow.domain.mail import (
    Address,
    FlagChange,
    IncomingMessage,
    MailBatch,
    MailFolder,
    MailProvider,
    OutgoingMessage,
    SentMessage,
)
from crmflow.domain.secret import Secret
from crmflow.errors import ValidationFailed
from crmflow.mail.parse import parse_message
from crmflow.providers._http import new_client, send_with_bearer, transport_error
from crmflow.providers.base import (
    CursorExpired,
    ItemNotFound,
    ProviderError,
    TransientProviderError,
)
from crmflow.providers.google._http import error_message, error_reasons, google_error

__all__ = [
    "BATCH_SIZE",
    "GMAIL_MODIFY",
    "GMAIL_READONLY",
    "GMAIL_SEND",
    "GmailMailbox",
]

#: the scope sending needs
GMAIL_SEND = "https://www.googleapis.com/auth/gmail.send"
#: the scope reading needs
GMAIL_READONLY = "https://www.googleapis.com/auth/gmail.readonly"
#: the scope changing labels (the read flag) needs
GMAIL_MODIFY = "https://www.googleapis.com/auth/gmail.modify"
#: Gmail's default page size for messages.list and history.list
PAGE_SIZE = 100
#: Gmail's largest page size for messages.list and history.list
MAX_PAGE_SIZE = 500
#: messages.get calls per batch request; Gmail takes 100, but answers big
#: batches with 429 "Too many concurrent requests for user" (§5.4)
BATCH_SIZE = 10

_RATE_REASONS = frozenset(
    {
        "rateLimitExceeded",
        "userRateLimitExceeded",
        "dailyLimitExceeded",
        "quotaExceeded",
    }
)
#: labels of messages the CRM does not import
_SKIPPED_LABELS = frozenset({"DRAFT", "SPAM", "TRASH", "CHAT"})
#: a message losing one of these labels comes back into view
_HIDING_LABELS = frozenset({"SPAM", "TRASH"})
_HISTORY_TYPES = ("messageAdded", "messageDeleted", "labelAdded", "labelRemoved")
_RAW_PARAMS: dict[str, str | int] = {
    "format": "raw",
    "fields": "id,threadId,labelIds,internalDate,raw",
}

AccessToken = Callable[[], Awaitable[Secret]]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii")


def _unb64url(text: str) -> bytes:
    """Decode base64url with or without padding. Raises ValueError."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc


def _with_bcc(raw: bytes, bcc: Sequence[Address]) -> bytes:
    """``raw`` with a ``Bcc`` header naming ``bcc``, unless it has one.

    The composed bytes leave Bcc out (no recipient may see it); Gmail takes
    the recipients from the headers and removes ``Bcc`` before delivering.

    Raises:
        ValidationFailed: an address cannot be written into a header.
    """
    if not bcc:
        return raw
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    if any(line[:4].lower() == b"bcc:" for line in head.splitlines()):
        return raw
    eol = b"\r\n" if b"\r\n" in head or not head else b"\n"
    emails: list[bytes] = []
    for address in bcc:
        local, _, domain = address.email.rpartition("@")
        try:
            emails.append(local.encode("ascii") + b"@" + domain.encode("idna").lower())
        except UnicodeError:
            raise ValidationFailed(
                f"{address.email!r} cannot be used as a Bcc address through Gmail."
            ) from None
    # one address per line (folded) keeps every line far below 998 characters
    return b"Bcc: " + (b"," + eol + b" ").join(emails) + eol + raw


def _epoch_s(when: dt.datetime) -> int:
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0, int(when.timestamp()))


def _batch_url(root: str) -> str | None:
    """The batch endpoint next to the API root (``…/gmail/v1/`` -> ``…/batch/gmail/v1``)."""
    parts = urlsplit(root)
    path = parts.path.rstrip("/")
    if not path.endswith("/gmail/v1"):
        return None
    base = path[: -len("/gmail/v1")]
    return urlunsplit((parts.scheme, parts.netloc, base + "/batch/gmail/v1", "", ""))


def _expired(what: str) -> CursorExpired:
    return CursorExpired(
        f"{what}: Gmail no longer keeps the mailbox history since the last sync; "
        "a full sync is needed."
    )


def _message_id(item: Any) -> str | None:
    message = item.get("message") if isinstance(item, dict) else None
    if isinstance(message, dict) and message.get("id"):
        return str(message["id"])
    return None


def _labels(item: Any) -> set[str]:
    labels = item.get("labelIds") if isinstance(item, dict) else None
    return {str(label) for label in labels} if isinstance(labels, list) else set()


def _entries(record: Mapping[str, Any], key: str) -> list[Any]:
    value = record.get(key)
    return value if isinstance(value, list) else []


@dataclasses.dataclass(frozen=True, slots=True)
class _HistoryPage:
    """What one page of ``history.list`` changed."""

    #: messages to read (added, or back from spam / trash), in order
    added: tuple[str, ...]
    removed: tuple[str, ...]
    flags: tuple[FlagChange, ...]

    @classmethod
    def read(cls, records: Sequence[Any]) -> _HistoryPage:
        added: dict[str, None] = {}
        removed: dict[str, None] = {}
        read_state: dict[str, bool] = {}
        for record in records:
            if not isinstance(record, dict):
                continue
            for item in _entries(record, "messagesAdded"):
                if (mid := _message_id(item)) is not None:
                    added[mid] = None
            for item in _entries(record, "messagesDeleted"):
                if (mid := _message_id(item)) is not None:
                    # deleted before we read it: nothing to fetch
                    added.pop(mid, None)
                    read_state.pop(mid, None)
                    removed[mid] = None
            for item in _entries(record, "labelsAdded"):
                if (mid := _message_id(item)) is not None and "UNREAD" in _labels(item):
                    read_state[mid] = False
            for item in _entries(record, "labelsRemoved"):
                if (mid := _message_id(item)) is None:
                    continue
                labels = _labels(item)
                if "UNREAD" in labels:
                    read_state[mid] = True
                if labels & _HIDING_LABELS and mid not in removed:
                    added[mid] = None
        return cls(
            added=tuple(added),
            removed=tuple(removed),
            # a message read in full carries its read state already
            flags=tuple(
                FlagChange(mid, is_read)
                for mid, is_read in read_state.items()
                if mid not in added
            ),
        )


def _split_head(data: bytes) -> tuple[list[str], bytes]:
    """Header lines and the rest of an HTTP or MIME entity (CRLF or LF)."""
    ends = [i for i in (data.find(b"\r\n\r\n"), data.find(b"\n\n")) if i >= 0]
    if not ends:
        return data.decode("latin-1").splitlines(), b""
    end = min(ends)
    gap = 4 if data[end : end + 4] == b"\r\n\r\n" else 2
    head = data[:end].decode("latin-1").splitlines()
    return [line for line in head if line.strip()], data[end + gap :]


def _read_batch(response: httpx.Response) -> dict[str, httpx.Response]:
    """The answers of a batch response by the ``Content-ID`` of their request.

    Each part is ``application/http``: a status line, headers and a body;
    its ``Content-ID`` is ``<response-ID>`` for the request's ``<ID>``.
    """
    holder = Message()
    holder["Content-Type"] = response.headers.get("content-type", "")
    boundary = holder.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        return {}
    out: dict[str, httpx.Response] = {}
    for chunk in response.content.split(b"--" + boundary.encode("latin-1"))[1:]:
        if chunk.startswith(b"--"):
            break
        part_head, http = _split_head(chunk.lstrip(b"\r\n"))
        content_id = ""
        for line in part_head:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-id":
                content_id = value.strip().strip("<>").removeprefix("response-")
        head, body = _split_head(http)
        if not head or not content_id:
            continue
        try:
            status = int(head[0].split()[1])
        except (IndexError, ValueError):
            continue
        headers: list[tuple[str, str]] = []
        length: int | None = None
        for line in head[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                continue
            if name.strip().lower() == "content-length" and value.strip().isdigit():
                length = int(value.strip())
            headers.append((name.strip(), value.strip()))
        if length is not None:
            body = body[:length]
        elif body.endswith(b"\r\n"):
            body = body[:-2]
        out[content_id] = httpx.Response(status, headers=headers, content=body)
    return out


def _retry_alone(response: httpx.Response) -> bool:
    """Whether a batched call should be tried again on its own (rate limits,
    server errors)."""
    status = response.status_code
    if status == 429 or status >= 500:
        return True
    return status == 403 and bool(error_reasons(response) & _RATE_REASONS)


class GmailMailbox(MailProvider):
    """The mailbox of one Gmail account.

    ``root`` is the Gmail API root: ``{google_api_url}/gmail/v1/`` (production
    ``https://gmail.googleapis.com/gmail/v1/``; sandbox ``B + "gmail/v1/"``);
    the batch endpoint is found next to it. ``token`` is awaited before every
    request, so the caller may refresh tokens behind it. ``transport``
    replaces httpx's network (tests). ``page_size`` is how many messages or
    history records one :class:`MailBatch` covers (1-500).
    """

    def __init__(
        self,
        root: str,
        token: AccessToken,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1-{MAX_PAGE_SIZE}")
        self._users = root.rstrip("/") + "/users/me/"
        self._batch = _batch_url(root)
        self._token = token
        self._transport = transport
        self._page_size = page_size

    # ------------------------------------------------------------ port

    async def send(self, message: OutgoingMessage, raw: bytes) -> SentMessage:
        what = "Sending the message through Gmail"
        body: dict[str, str] = {"raw": _b64url(_with_bcc(raw, message.bcc))}
        if message.provider_thread_id:
            body["threadId"] = message.provider_thread_id
        url = self._users + "messages/send"
        response = await self._send("POST", url, what, json=body)
        if response.status_code == 404 and "threadId" in body:
            # the conversation is gone from the mailbox: start a new one
            del body["threadId"]
            response = await self._send("POST", url, what, json=body)
        if response.status_code == 400:
            reason = error_message(response) or "the message is not valid"
            raise ValidationFailed(f"Gmail refused the message: {reason}")
        if response.status_code != 200:
            raise self._error(response, what, GMAIL_SEND)
        sent = self._json(response, what)
        return SentMessage(
            provider_id=str(sent["id"]) if sent.get("id") else None,
            thread_id=str(sent["threadId"]) if sent.get("threadId") else None,
        )

    async def fetch(
        self, cursor: str | None, *, since: dt.datetime
    ) -> AsyncIterator[MailBatch]:
        async with new_client(self._transport) as client:
            if cursor is None:
                pages = self._everything(client, since)
            else:
                pages = self._changes(client, cursor)
            async for batch in pages:
                yield batch

    async def mark_read(self, provider_id: str, is_read: bool) -> None:
        what = f"Marking a Gmail message as {'read' if is_read else 'unread'}"
        change = {"removeLabelIds" if is_read else "addLabelIds": ["UNREAD"]}
        response = await self._send(
            "POST", self._message_url(provider_id) + "/modify", what, json=change
        )
        if response.status_code == 404:
            raise ItemNotFound(f"{what}: the message is no longer in the mailbox.")
        if response.status_code != 200:
            raise self._error(response, what, GMAIL_MODIFY)

    async def attachment(self, provider_id: str, attachment_id: str) -> bytes:
        what = "Reading a Gmail attachment"
        url = (
            self._message_url(provider_id)
            + "/attachments/"
            + quote(attachment_id, safe="")
        )
        response = await self._send("GET", url, what)
        if response.status_code == 404:
            raise ItemNotFound(f"{what}: the message is no longer in the mailbox.")
        if response.status_code != 200:
            raise self._error(response, what, GMAIL_READONLY)
        try:
            return _unb64url(str(self._json(response, what).get("data") or ""))
        except ValueError:
            raise ProviderError(
                f"{what}: Gmail sent data crmflow cannot read."
            ) from None

    # ------------------------------------------------------------ fetching

    async def _everything(
        self, client: httpx.AsyncClient, since: dt.datetime
    ) -> AsyncIterator[MailBatch]:
        """Every message since ``since``, a page at a time; the cursor is the
        history id read before listing."""
        what = "Reading the Gmail mailbox"
        response = await self._send("GET", self._users + "profile", what, client=client)
        if response.status_code != 200:
            raise self._error(response, what, GMAIL_READONLY)
        history_id = self._json(response, what).get("historyId")
        if not history_id:
            raise ProviderError(f"{what}: Gmail sent no history id.")
        params: dict[str, str | int] = {
            "q": f"after:{_epoch_s(since)}",
            "includeSpamTrash": "false",
            "maxResults": self._page_size,
        }
        while True:
            response = await self._send(
                "GET", self._users + "messages", what, params=params, client=client
            )
            if response.status_code != 200:
                raise self._error(response, what, GMAIL_READONLY)
            page = self._json(response, what)
            ids = [
                str(m["id"])
                for m in page.get("messages") or ()
                if isinstance(m, dict) and m.get("id")
            ]
            messages = await self._read_messages(client, ids)
            token = page.get("nextPageToken")
            if not token:
                yield MailBatch(messages=messages, cursor=str(history_id))
                return
            if messages:
                yield MailBatch(messages=messages)
            params["pageToken"] = str(token)

    async def _changes(
        self, client: httpx.AsyncClient, cursor: str
    ) -> AsyncIterator[MailBatch]:
        """The mailbox history after ``cursor``, a page at a time."""
        what = "Reading Gmail changes"
        if not cursor.isdigit():
            raise _expired(what)
        query: list[tuple[str, str | int]] = [
            ("startHistoryId", cursor),
            *(("historyTypes", kind) for kind in _HISTORY_TYPES),
            ("maxResults", self._page_size),
        ]
        page_token: str | None = None
        while True:
            pairs = [*query, ("pageToken", page_token)] if page_token else query
            url = self._users + "history?" + urlencode(pairs)
            response = await self._send("GET", url, what, client=client)
            if response.status_code == 404:
                raise _expired(what)
            if response.status_code != 200:
                raise self._error(response, what, GMAIL_READONLY)
            page = self._json(response, what)
            records = page.get("history")
            changes = _HistoryPage.read(records if isinstance(records, list) else [])
            batch = MailBatch(
                messages=await self._read_messages(client, changes.added),
                removed=changes.removed,
                flags=changes.flags,
            )
            token = page.get("nextPageToken")
            if not token:
                history_id = page.get("historyId")
                if not history_id:
                    raise ProviderError(f"{what}: Gmail sent no history id.")
                yield dataclasses.replace(batch, cursor=str(history_id))
                return
            if batch.messages or batch.removed or batch.flags:
                yield batch
            page_token = str(token)

    async def _read_messages(
        self, client: httpx.AsyncClient, ids: Sequence[str]
    ) -> tuple[IncomingMessage, ...]:
        """The messages ``ids`` parsed, in order; gone and skipped ones left out."""
        what = "Reading Gmail messages"
        out: list[IncomingMessage] = []
        for start in range(0, len(ids), BATCH_SIZE):
            chunk = ids[start : start + BATCH_SIZE]
            for response in await self._get_raw(client, chunk):
                if response.status_code == 404:
                    continue  # deleted meanwhile: the history says so
                if response.status_code != 200:
                    raise self._error(response, what, GMAIL_READONLY)
                parsed = self._parse(self._json(response, what))
                if parsed is not None:
                    out.append(parsed)
        return tuple(out)

    async def _get_raw(
        self, client: httpx.AsyncClient, ids: Sequence[str]
    ) -> list[httpx.Response]:
        """``messages.get?format=raw`` for each id: one batch request, then on
        their own the calls the batch could not answer."""
        what = "Reading Gmail messages"
        answers: list[httpx.Response | None] = [None] * len(ids)
        if self._batch is not None and len(ids) > 1:
            answers = await self._batch_get(client, self._batch, ids, what)
        out: list[httpx.Response] = []
        for mid, answer in zip(ids, answers, strict=True):
            if answer is None or _retry_alone(answer):
                answer = await self._send(
                    "GET",
                    self._message_url(mid),
                    what,
                    params=_RAW_PARAMS,
                    client=client,
                )
            out.append(answer)
        return out

    async def _batch_get(
        self,
        client: httpx.AsyncClient,
        batch_url: str,
        ids: Sequence[str],
        what: str,
    ) -> list[httpx.Response | None]:
        """One ``batch/gmail/v1`` request reading ``ids`` (None: no answer)."""
        boundary = "crmflow_" + secrets.token_hex(12)
        base = urlsplit(self._users).path
        query = urlencode(_RAW_PARAMS)
        parts = [
            f"--{boundary}\r\nContent-Type: application/http\r\n"
            f"Content-ID: <m{i}>\r\n\r\n"
            f"GET {base}messages/{quote(mid, safe='')}?{query} HTTP/1.1\r\n\r\n"
            for i, mid in enumerate(ids)
        ]
        body = ("".join(parts) + f"--{boundary}--\r\n").encode("ascii")
        token = await self._token()
        headers = {
            "Authorization": f"Bearer {token.reveal()}",
            "Content-Type": f"multipart/mixed; boundary={boundary}",
        }
        try:
            response = await client.post(batch_url, content=body, headers=headers)
        except httpx.TransportError as exc:
            raise transport_error(exc, what) from None
        except httpx.HTTPError as exc:  # e.g. a malformed response
            raise TransientProviderError(
                f"{what}: HTTP error ({type(exc).__name__}); retrying later."
            ) from None
        if response.status_code != 200:
            raise self._error(response, what, GMAIL_READONLY)
        found = _read_batch(response)
        return [found.get(f"m{i}") for i in range(len(ids))]

    def _parse(self, item: Mapping[str, Any]) -> IncomingMessage | None:
        """A ``format=raw`` message as the CRM sees it; None for drafts, spam,
        trash and chat."""
        labels = tuple(str(label) for label in item.get("labelIds") or ())
        if _SKIPPED_LABELS.intersection(labels):
            return None
        provider_id = str(item.get("id") or "")
        try:
            raw = _unb64url(str(item.get("raw") or ""))
        except ValueError:
            raise ProviderError(
                f"Gmail sent message {provider_id} in a form crmflow cannot read."
            ) from None
        thread_id = item.get("threadId")
        parsed = parse_message(
            raw,
            provider_id=provider_id,
            folder=MailFolder.SENT if "SENT" in labels else MailFolder.INBOX,
            is_read="UNREAD" not in labels,
            thread_id=str(thread_id) if thread_id else None,
            labels=labels,
        )
        received = str(item.get("internalDate") or "")
        if parsed.date is None and received.isdigit():
            # no readable Date header: when Gmail received it (epoch ms)
            when = dt.datetime.fromtimestamp(int(received) / 1000, dt.UTC)
            parsed = dataclasses.replace(parsed, date=when)
        return parsed

    # ------------------------------------------------------------ HTTP

    def _message_url(self, provider_id: str) -> str:
        return self._users + "messages/" + quote(provider_id, safe="")

    async def _send(
        self,
        method: str,
        url: str,
        what: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        client: httpx.AsyncClient | None = None,
    ) -> httpx.Response:
        return await send_with_bearer(
            self._transport,
            self._token,
            method,
            url,
            what,
            params=params,
            json=json,
            client=client,
        )

    @staticmethod
    def _json(response: httpx.Response, what: str) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise TransientProviderError(
                f"{what}: Gmail sent an unreadable answer; retrying later."
            )
        return body

    @staticmethod
    def _error(response: httpx.Response, what: str, scope: str) -> ProviderError:
        return google_error(
            response, what, product="Gmail", scopes=[scope], rate_reasons=_RATE_REASONS
        )
