"""Outlook mail fidelity: sendMail, drafts, delivery, lists, message delta, attachments, upload sessions."""

from __future__ import annotations

import base64
from typing import Any

import httpx

from tests.sandbox.microsoft.conftest import Ms

ADA = "ada@contoso.example"
BOB = "bob@contoso.example"


def _message(to: str = BOB, subject: str = "Hello") -> dict[str, Any]:
    return {
        "subject": subject,
        "body": {"contentType": "Text", "content": "Hi Bob"},
        "toRecipients": [{"emailAddress": {"address": to}}],
    }


async def test_send_mail_is_202_saves_and_delivers(ms: Ms) -> None:
    ms.add_user(BOB)
    async with ms.user_client(ADA) as ada, ms.client(ms.token(BOB)) as bob:
        sent = await ada.post(
            "/me/sendMail", json={"message": _message(), "saveToSentItems": True}
        )
        assert sent.status_code == 202
        assert sent.content == b""
        sent_items = (await ada.get("/me/mailFolders/sentitems/messages")).json()[
            "value"
        ]
        assert [m["subject"] for m in sent_items] == ["Hello"]
        inbox = (await bob.get("/me/mailFolders/inbox/messages")).json()["value"]
        assert len(inbox) == 1
        msg = inbox[0]
        assert msg["from"]["emailAddress"]["address"] == ADA
        assert msg["isRead"] is False
        assert msg["internetMessageId"] == sent_items[0]["internetMessageId"]
        assert msg["conversationId"]
        assert msg["bodyPreview"] == "Hi Bob"
        assert msg["hasAttachments"] is False
        unsaved = await ada.post(
            "/me/sendMail",
            json={"message": _message(subject="Quiet"), "saveToSentItems": "false"},
        )
        assert unsaved.status_code == 202
        assert (
            len((await ada.get("/me/mailFolders/sentitems/messages")).json()["value"])
            == 1
        )


async def test_send_mail_mime_and_bad_base64(ms: Ms) -> None:
    ms.add_user(BOB)
    mime = f"From: {ADA}\r\nTo: {BOB}\r\nSubject: MIME hello\r\nContent-Type: text/plain\r\n\r\nBody text\r\n"
    async with ms.user_client(ADA) as ada:
        ok = await ada.post(
            "/me/sendMail",
            content=base64.b64encode(mime.encode()),
            headers={"Content-Type": "text/plain"},
        )
        assert ok.status_code == 202
        bad = await ada.post(
            "/me/sendMail",
            content=b"%%% not base64",
            headers={"Content-Type": "text/plain"},
        )
        assert bad.status_code == 400
        assert bad.json()["error"] == {
            **bad.json()["error"],
            "code": "ErrorMimeContentInvalidBase64String",
            "message": "Invalid base64 string for MIME content.",
        }
    async with ms.client(ms.token(BOB)) as bob:
        inbox = (await bob.get("/me/messages")).json()["value"]
    assert [m["subject"] for m in inbox] == ["MIME hello"]


async def test_draft_then_send_and_immutable_ids(ms: Ms) -> None:
    ms.add_user(BOB)
    async with ms.user_client(ADA) as ada:
        draft = await ada.post(
            "/me/messages",
            json=_message(subject="Draft"),
            headers={"Prefer": 'IdType="ImmutableId"'},
        )
        assert draft.status_code == 201
        assert draft.json()["isDraft"] is True
        immutable = draft.json()["id"]
        regular = (await ada.get("/me/mailFolders/drafts/messages")).json()["value"][0][
            "id"
        ]
        assert regular != immutable
        assert (await ada.post(f"/me/messages/{immutable}/send")).status_code == 202
        # the regular id changed with the move to Sent Items; the immutable one did not
        assert (await ada.get(f"/me/messages/{regular}")).status_code == 404
        moved = await ada.get(
            f"/me/messages/{immutable}", headers={"Prefer": 'IdType="ImmutableId"'}
        )
        assert moved.status_code == 200
        assert moved.json()["isDraft"] is False
        assert moved.headers["preference-applied"] == 'IdType="ImmutableId"'


async def test_list_paging_top_select_and_update(ms: Ms) -> None:
    async with ms.user_client(ADA) as ada:
        for i in range(12):
            assert (
                ms.control(
                    "POST",
                    f"/users/{ADA}/messages",
                    {
                        "message": {
                            "subject": f"M{i}",
                            "body": {"contentType": "text", "content": "x"},
                        },
                        "from": "x@ext.example",
                    },
                ).status_code
                == 201
            )
        page = (await ada.get("/me/mailFolders/inbox/messages")).json()
        assert len(page["value"]) == 10
        assert "@odata.nextLink" in page
        # newest first
        assert page["value"][0]["subject"] == "M11"
        top = (
            await ada.get(
                "/me/messages", params={"$top": "3", "$select": "subject,isRead"}
            )
        ).json()
        assert len(top["value"]) == 3
        assert set(top["value"][0]) == {"@odata.etag", "id", "subject", "isRead"}
        msg = page["value"][0]
        read = await ada.patch(
            f"/me/messages/{msg['id']}",
            json={"isRead": True},
            headers={"If-Match": msg["@odata.etag"]},
        )
        assert read.status_code == 200
        assert read.json()["isRead"] is True
        stale = await ada.patch(
            f"/me/messages/{msg['id']}",
            json={"isRead": False},
            headers={"If-Match": msg["@odata.etag"]},
        )
        assert stale.status_code == 412
        unread = (
            await ada.get(
                "/me/messages", params={"$filter": "isRead eq false", "$top": "50"}
            )
        ).json()["value"]
        assert len(unread) == 11


async def test_inbox_message_delta(ms: Ms) -> None:
    async with ms.user_client(ADA) as ada:
        first_id = ms.control(
            "POST", f"/users/{ADA}/messages", {"message": {"subject": "One"}}
        ).json()["id"]
        initial = (
            await ada.get(
                "/me/mailFolders/inbox/messages/delta", params={"$select": "subject"}
            )
        ).json()
        assert [m["subject"] for m in initial["value"]] == ["One"]
        delta_link = initial["@odata.deltaLink"]
        ms.control("POST", f"/users/{ADA}/messages", {"message": {"subject": "Two"}})
        await ada.delete(f"/me/messages/{first_id}")
        changes = (await ada.get(delta_link)).json()
        subjects = [m.get("subject") for m in changes["value"] if "@removed" not in m]
        removed = [m["id"] for m in changes["value"] if "@removed" in m]
        assert subjects == ["Two"]
        assert removed == [first_id]
        ms.control("POST", "/delta/expire", {"email": ADA})
        assert (await ada.get(changes["@odata.deltaLink"])).status_code == 410


async def test_attachments_small_inline_and_upload_session(ms: Ms) -> None:
    async with ms.user_client(ADA) as ada:
        draft = (await ada.post("/me/messages", json=_message())).json()
        small = {
            "@odata.type": "#microsoft.graph.fileAttachment",
            "name": "a.txt",
            "contentType": "text/plain",
            "contentBytes": base64.b64encode(b"hello").decode(),
        }
        created = await ada.post(f"/me/messages/{draft['id']}/attachments", json=small)
        assert created.status_code == 201
        att = created.json()
        assert att["size"] == 5
        raw = await ada.get(
            f"/me/messages/{draft['id']}/attachments/{att['id']}/$value"
        )
        assert raw.content == b"hello"
        listed = (await ada.get(f"/me/messages/{draft['id']}/attachments")).json()[
            "value"
        ]
        assert [a["name"] for a in listed] == ["a.txt"]
        too_small = await ada.post(
            f"/me/messages/{draft['id']}/attachments/createUploadSession",
            json={
                "AttachmentItem": {
                    "attachmentType": "file",
                    "name": "s.bin",
                    "size": 1024,
                }
            },
        )
        assert too_small.status_code == 400
        assert (
            too_small.json()["error"]["code"]
            == "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize"
        )
        size = 3 * 1024 * 1024 + 10
        session = await ada.post(
            f"/me/messages/{draft['id']}/attachments/createUploadSession",
            json={
                "AttachmentItem": {
                    "attachmentType": "file",
                    "name": "big.bin",
                    "size": size,
                }
            },
        )
        assert session.status_code == 201
        upload_url = session.json()["uploadUrl"]
        data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        half = size // 2
    async with httpx.AsyncClient(verify=ms.server.ssl) as plain:
        part1 = await plain.put(
            upload_url,
            content=data[:half],
            headers={"Content-Range": f"bytes 0-{half - 1}/{size}"},
        )
        assert part1.status_code == 200
        assert part1.json()["nextExpectedRanges"] == [f"{half}-{size - 1}"]
        wrong = await plain.put(
            upload_url,
            content=data[:10],
            headers={"Content-Range": f"bytes 0-9/{size}"},
        )
        assert wrong.status_code == 416
        part2 = await plain.put(
            upload_url,
            content=data[half:],
            headers={"Content-Range": f"bytes {half}-{size - 1}/{size}"},
        )
        assert part2.status_code == 201
    async with ms.client(ms.token(ADA)) as ada:
        names = [
            (a["name"], a["size"])
            for a in (await ada.get(f"/me/messages/{draft['id']}/attachments")).json()[
                "value"
            ]
        ]
    assert ("big.bin", size) in names


async def test_mail_scopes(ms: Ms) -> None:
    async with ms.user_client(ADA, ["Mail.Read"]) as ada:
        assert (await ada.get("/me/messages")).status_code == 200
        assert (
            await ada.post("/me/sendMail", json={"message": _message()})
        ).status_code == 403
