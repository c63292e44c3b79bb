"""Gmail v1: profile, send + delivery, list/q, get formats, modify, attachments, threads, labels, history."""

from __future__ import annotations

import base64
import itertools

from tests.sandbox.conftest import GMAIL_METADATA, GMAIL_SEND, GoogleSandbox, raw_email

ADA = "ada@example.com"
BOB = "bob@example.com"


def test_profile_and_history_id(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    profile = api.get("gmail/v1/users/me/profile").json()
    assert profile["emailAddress"] == ADA
    assert profile["messagesTotal"] == 0
    assert profile["historyId"].isdigit()
    assert api.get(f"gmail/v1/users/{ADA}/profile").status_code == 200
    other = api.get(f"gmail/v1/users/{BOB}/profile")
    assert other.status_code == 403
    assert other.json()["error"]["status"] == "PERMISSION_DENIED"


def test_send_delivers_to_sandbox_recipient_inbox_and_history(google: GoogleSandbox):
    ada = google.api(google.access(ADA))
    bob = google.api(google.access(BOB))
    bob_start = bob.get("gmail/v1/users/me/profile").json()["historyId"]
    sent = ada.post(
        "gmail/v1/users/me/messages/send",
        json={
            "raw": raw_email(To=BOB, Subject="Quarterly numbers", body="Here they are.")
        },
    ).json()
    assert set(sent) == {"id", "threadId", "labelIds"}
    assert sent["labelIds"] == ["SENT"]
    assert sent["threadId"] == sent["id"]
    inbox = bob.get("gmail/v1/users/me/messages", params={"labelIds": "INBOX"}).json()
    assert inbox["resultSizeEstimate"] == 1
    (ref,) = inbox["messages"]
    assert set(ref) == {"id", "threadId"}
    full = bob.get(f"gmail/v1/users/me/messages/{ref['id']}").json()
    assert set(full["labelIds"]) == {"INBOX", "UNREAD", "CATEGORY_PERSONAL"}
    headers = {h["name"]: h["value"] for h in full["payload"]["headers"]}
    assert headers["From"] == ADA
    assert headers["Subject"] == "Quarterly numbers"
    assert "Message-ID" in headers
    history = bob.get(
        "gmail/v1/users/me/history", params={"startHistoryId": bob_start}
    ).json()
    assert [h["messagesAdded"][0]["message"]["id"] for h in history["history"]] == [
        ref["id"]
    ]
    assert int(history["historyId"]) > int(bob_start)


def test_reply_threads_only_with_thread_id_headers_and_subject(google: GoogleSandbox):
    ada = google.api(google.access(ADA))
    bob = google.api(google.access(BOB))
    ada.post(
        "gmail/v1/users/me/messages/send",
        json={"raw": raw_email(To=BOB, Subject="Lunch?", body="Friday?")},
    )
    incoming = bob.get("gmail/v1/users/me/messages").json()["messages"][0]
    original = bob.get(
        f"gmail/v1/users/me/messages/{incoming['id']}", params={"format": "metadata"}
    ).json()
    message_id = next(
        h["value"] for h in original["payload"]["headers"] if h["name"] == "Message-ID"
    )
    reply = raw_email(
        To=ADA,
        Subject="Re: Lunch?",
        In_Reply_To=message_id,
        References=message_id,
        body="Sure",
    )
    threaded = bob.post(
        "gmail/v1/users/me/messages/send",
        json={"raw": reply, "threadId": incoming["threadId"]},
    ).json()
    assert threaded["threadId"] == incoming["threadId"]
    # Same headers but a different subject: a new thread.
    other = raw_email(
        To=ADA,
        Subject="Dinner instead",
        In_Reply_To=message_id,
        References=message_id,
        body="?",
    )
    split = bob.post(
        "gmail/v1/users/me/messages/send",
        json={"raw": other, "threadId": incoming["threadId"]},
    ).json()
    assert split["threadId"] != incoming["threadId"]
    # The recipient threads the reply under the original too.
    ada_thread = ada.get(
        "gmail/v1/users/me/messages", params={"q": "subject:lunch"}
    ).json()["messages"]
    assert len({m["threadId"] for m in ada_thread}) == 1
    assert len(ada_thread) == 2
    thread = ada.get(f"gmail/v1/users/me/threads/{ada_thread[0]['threadId']}").json()
    assert len(thread["messages"]) == 2
    assert thread["messages"][0]["labelIds"] == ["SENT"]


def test_send_errors(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    missing = api.post("gmail/v1/users/me/messages/send", json={})
    assert missing.status_code == 400
    assert missing.json()["error"]["status"] == "INVALID_ARGUMENT"
    no_rcpt = api.post(
        "gmail/v1/users/me/messages/send",
        json={"raw": raw_email(Subject="x", body="y")},
    )
    assert no_rcpt.status_code == 400
    assert no_rcpt.json()["error"]["message"] == "Recipient address required"
    not_b64 = api.post("gmail/v1/users/me/messages/send", json={"raw": "!!!"})
    assert not_b64.status_code == 400


def test_external_recipients_go_to_outbox_without_bcc(google: GoogleSandbox):
    bob = google.api(google.access(BOB))
    api = google.api(google.access(ADA))
    api.post(
        "gmail/v1/users/me/messages/send",
        json={
            "raw": raw_email(
                To="client@acme.example", Bcc=BOB, Subject="Offer", body="Attached."
            )
        },
    )
    outbox = google.control("GET", "outbox").json()["messages"]
    assert [m["to"] for m in outbox] == [["client@acme.example"]]
    (ref,) = bob.get("gmail/v1/users/me/messages").json()["messages"]
    raw = bob.get(
        f"gmail/v1/users/me/messages/{ref['id']}", params={"format": "raw"}
    ).json()["raw"]
    assert b"Bcc" not in base64.urlsafe_b64decode(raw)


def test_get_formats_payload_and_attachments(google: GoogleSandbox):
    google.state.add_user(ADA)
    pdf = base64.urlsafe_b64encode(b"%PDF-1.4 fake").decode()
    delivered = google.deliver_mail(
        ADA,
        **{
            "from": "Jane <jane@acme.example>",
            "to": ADA,
            "subject": "Contract",
            "text": "See attachment & sign <today>.",
            "html": "<p>See attachment</p>",
            "attachments": [
                {"filename": "c.pdf", "mimeType": "application/pdf", "data": pdf}
            ],
        },
    )
    api = google.api(google.access(ADA))
    path = f"gmail/v1/users/me/messages/{delivered['id']}"
    full = api.get(path).json()
    payload = full["payload"]
    assert payload["partId"] == ""
    assert payload["mimeType"] == "multipart/mixed"
    assert payload["body"] == {"size": 0}
    alternative, attachment = payload["parts"]
    assert alternative["partId"] == "0"
    assert alternative["mimeType"] == "multipart/alternative"
    text_part = alternative["parts"][0]
    assert text_part["partId"] == "0.0"
    assert text_part["mimeType"] == "text/plain"
    assert base64.urlsafe_b64decode(text_part["body"]["data"]).startswith(
        b"See attachment & sign <today>."
    )
    assert attachment["filename"] == "c.pdf"
    assert "data" not in attachment["body"]
    assert full["snippet"] == "See attachment &amp; sign &lt;today&gt;."
    got = api.get(f"{path}/attachments/{attachment['body']['attachmentId']}").json()
    assert base64.urlsafe_b64decode(got["data"]) == b"%PDF-1.4 fake"
    assert got["size"] == attachment["body"]["size"] == 13

    minimal = api.get(path, params={"format": "minimal"}).json()
    assert "payload" not in minimal
    assert "raw" not in minimal
    assert set(minimal) == {
        "id",
        "threadId",
        "labelIds",
        "snippet",
        "sizeEstimate",
        "historyId",
        "internalDate",
    }
    metadata = api.get(
        path, params={"format": "metadata", "metadataHeaders": ["Subject", "From"]}
    ).json()
    assert [h["name"] for h in metadata["payload"]["headers"]] == ["From", "Subject"]
    raw = api.get(path, params={"format": "raw"}).json()
    assert "payload" not in raw
    assert b"Subject: Contract" in base64.urlsafe_b64decode(raw["raw"])
    assert api.get(path, params={"format": "html"}).status_code == 400
    assert api.get("gmail/v1/users/me/messages/0000000000000000").status_code == 404


def test_list_query_subset(google: GoogleSandbox):
    google.state.add_user(ADA)
    google.state.clock.advance(0)
    google.deliver_mail(
        ADA,
        **{
            "from": "jane@acme.example",
            "to": ADA,
            "subject": "Invoice 42",
            "text": "due",
        },
    )
    google.deliver_mail(
        ADA,
        **{"from": "bob@example.com", "to": ADA, "subject": "Lunch", "text": "pizza"},
    )
    spam = google.deliver_mail(
        ADA, **{"from": "x@spam.example", "to": ADA, "subject": "Win", "text": "money"}
    )
    google.control(
        "POST",
        f"mailboxes/{ADA}/messages/{spam['id']}/modify",
        json={"addLabelIds": ["SPAM"]},
    )
    api = google.api(google.access(ADA))

    def ids(q=None, **params):
        if q is not None:
            params["q"] = q
        return len(
            api.get("gmail/v1/users/me/messages", params=params)
            .json()
            .get("messages", [])
        )

    assert ids() == 2  # SPAM excluded by default
    assert ids(includeSpamTrash="true") == 3
    assert ids("from:jane@acme.example") == 1
    assert ids("subject:invoice") == 1
    assert ids("pizza") == 1
    assert ids("-from:jane@acme.example") == 1
    assert ids("in:spam") == 1
    assert ids("is:unread") == 2
    assert ids("to:" + ADA) == 2
    assert ids("after:2000/01/01") == 2
    assert ids("before:2000/01/01") == 0
    assert ids("newer_than:1d") == 2
    empty = api.get(
        "gmail/v1/users/me/messages", params={"q": "nothing-matches"}
    ).json()
    assert empty == {"resultSizeEstimate": 0}


def test_list_paging_default_100_max_500(google: GoogleSandbox):
    google.state.add_user(ADA)
    for i in range(120):
        google.deliver_mail(
            ADA, **{"from": "a@b.example", "to": ADA, "subject": f"m{i}", "text": "x"}
        )
    api = google.api(google.access(ADA))
    first = api.get("gmail/v1/users/me/messages").json()
    assert len(first["messages"]) == 100
    assert "nextPageToken" in first
    second = api.get(
        "gmail/v1/users/me/messages", params={"pageToken": first["nextPageToken"]}
    ).json()
    assert len(second["messages"]) == 20
    assert "nextPageToken" not in second
    assert not {m["id"] for m in first["messages"]} & {
        m["id"] for m in second["messages"]
    }


def test_modify_labels_and_history_types(google: GoogleSandbox):
    google.state.add_user(ADA)
    msg = google.deliver_mail(
        ADA, **{"from": "a@b.example", "to": ADA, "subject": "s", "text": "t"}
    )
    api = google.api(google.access(ADA))
    start = api.get("gmail/v1/users/me/profile").json()["historyId"]
    label = api.post(
        "gmail/v1/users/me/labels",
        json={
            "name": "Customers",
            "labelListVisibility": "labelShow",
            "messageListVisibility": "show",
        },
    ).json()
    assert label["id"].startswith("Label_")
    assert label["type"] == "user"
    modified = api.post(
        f"gmail/v1/users/me/messages/{msg['id']}/modify",
        json={"addLabelIds": [label["id"], "STARRED"], "removeLabelIds": ["UNREAD"]},
    ).json()
    assert set(modified) == {"id", "threadId", "labelIds"}
    assert "UNREAD" not in modified["labelIds"]
    assert label["id"] in modified["labelIds"]
    assert (
        api.post(
            f"gmail/v1/users/me/messages/{msg['id']}/modify",
            json={"addLabelIds": ["NOPE"]},
        ).status_code
        == 400
    )
    assert (
        api.post(
            f"gmail/v1/users/me/messages/{msg['id']}/modify",
            json={"addLabelIds": ["SENT"]},
        ).status_code
        == 400
    )
    # labelIds are AND-ed: both labels on the message, one missing elsewhere.
    both = api.get(
        "gmail/v1/users/me/messages", params={"labelIds": [label["id"], "STARRED"]}
    ).json()
    assert [m["id"] for m in both["messages"]] == [msg["id"]]
    none = api.get(
        "gmail/v1/users/me/messages", params={"labelIds": [label["id"], "UNREAD"]}
    ).json()
    assert none == {"resultSizeEstimate": 0}
    history = api.get(
        "gmail/v1/users/me/history", params={"startHistoryId": start}
    ).json()["history"]
    assert [("labelsAdded" in h, "labelsRemoved" in h) for h in history] == [
        (True, False),
        (False, True),
    ]
    assert history[0]["labelsAdded"][0]["labelIds"] == [label["id"], "STARRED"]
    ids = [int(h["id"]) for h in history]
    assert ids == sorted(ids)
    assert ids[0] > int(start)
    only_removed = api.get(
        "gmail/v1/users/me/history",
        params={"startHistoryId": start, "historyTypes": "labelRemoved"},
    ).json()["history"]
    assert len(only_removed) == 1
    labels = api.get("gmail/v1/users/me/labels").json()["labels"]
    assert {"INBOX", "SENT", "UNREAD", label["id"]} <= {item["id"] for item in labels}
    assert "messagesTotal" not in labels[0]
    counted = api.get(f"gmail/v1/users/me/labels/{label['id']}").json()
    assert counted["messagesTotal"] == 1
    assert (
        api.post(
            "gmail/v1/users/me/labels",
            json={
                "name": "customers",
                "labelListVisibility": "labelShow",
                "messageListVisibility": "show",
            },
        ).status_code
        == 409
    )


def test_history_404_when_too_old(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    start = api.get("gmail/v1/users/me/profile").json()["historyId"]
    google.deliver_mail(
        ADA, **{"from": "a@b.example", "to": ADA, "subject": "s", "text": "t"}
    )
    assert google.control("POST", f"mailboxes/{ADA}/expire-history").status_code == 200
    old = api.get("gmail/v1/users/me/history", params={"startHistoryId": start})
    assert old.status_code == 404
    assert old.json() == {
        "error": {
            "code": 404,
            "message": "Requested entity was not found.",
            "errors": [
                {
                    "domain": "global",
                    "reason": "notFound",
                    "message": "Requested entity was not found.",
                }
            ],
            "status": "NOT_FOUND",
        }
    }
    fresh = api.get("gmail/v1/users/me/profile").json()["historyId"]
    assert api.get(
        "gmail/v1/users/me/history", params={"startHistoryId": fresh}
    ).json() == {"historyId": fresh}


def test_history_ids_have_gaps_and_deletes_are_recorded(google: GoogleSandbox):
    google.state.add_user(ADA)
    api = google.api(google.access(ADA))
    start = api.get("gmail/v1/users/me/profile").json()["historyId"]
    ids = [
        google.deliver_mail(ADA, to=ADA, subject=f"s{i}", text="t")["id"]
        for i in range(5)
    ]
    assert api.delete(f"gmail/v1/users/me/messages/{ids[0]}").status_code == 204
    history = api.get(
        "gmail/v1/users/me/history", params={"startHistoryId": start}
    ).json()["history"]
    numbers = [int(h["id"]) for h in history]
    assert numbers == sorted(numbers)
    assert any(b - a > 1 for a, b in itertools.pairwise(numbers))
    assert history[-1]["messagesDeleted"][0]["message"]["id"] == ids[0]
    paged = api.get(
        "gmail/v1/users/me/history", params={"startHistoryId": start, "maxResults": 2}
    ).json()
    assert len(paged["history"]) == 2
    assert "nextPageToken" in paged


def test_trash_untrash_and_threads_list(google: GoogleSandbox):
    google.state.add_user(ADA)
    msg = google.deliver_mail(
        ADA, **{"from": "a@b.example", "to": ADA, "subject": "s", "text": "hello"}
    )
    api = google.api(google.access(ADA))
    trashed = api.post(f"gmail/v1/users/me/messages/{msg['id']}/trash").json()
    assert "TRASH" in trashed["labelIds"]
    assert "INBOX" not in trashed["labelIds"]
    assert api.get("gmail/v1/users/me/messages").json()["resultSizeEstimate"] == 0
    api.post(f"gmail/v1/users/me/messages/{msg['id']}/untrash")
    threads = api.get("gmail/v1/users/me/threads").json()
    assert threads["threads"][0]["snippet"] == "hello"


def test_metadata_scope_restrictions(google: GoogleSandbox):
    google.state.add_user(ADA)
    msg = google.deliver_mail(
        ADA, **{"from": "a@b.example", "to": ADA, "subject": "s", "text": "t"}
    )
    api = google.api(google.access(ADA, [GMAIL_METADATA]))
    assert api.get("gmail/v1/users/me/messages").status_code == 200
    assert api.get("gmail/v1/users/me/messages", params={"q": "s"}).status_code == 403
    assert api.get(f"gmail/v1/users/me/messages/{msg['id']}").status_code == 403
    assert (
        api.get(
            f"gmail/v1/users/me/messages/{msg['id']}", params={"format": "metadata"}
        ).status_code
        == 200
    )
    send_only = google.api(google.access(BOB, [GMAIL_SEND]))
    assert send_only.get("gmail/v1/users/me/messages").status_code == 403


def test_unknown_query_parameter_is_rejected_like_gmail(google: GoogleSandbox):
    api = google.api(google.access(ADA))
    response = api.get("gmail/v1/users/me/messages", params={"foo": "bar"})
    assert response.status_code == 400
    assert 'Unknown name "foo"' in response.json()["error"]["message"]


def test_send_by_media_upload_simple_and_multipart(google: GoogleSandbox):
    bob = google.api(google.access(BOB))
    api = google.api(google.access(ADA))
    raw = base64.urlsafe_b64decode(
        raw_email(To=BOB, Subject="Uploaded", body="via media")
    )
    simple = api.post(
        "upload/gmail/v1/users/me/messages/send",
        params={"uploadType": "media"},
        content=raw,
        headers={"Content-Type": "message/rfc822"},
    )
    assert simple.status_code == 200
    assert simple.json()["labelIds"] == ["SENT"]
    related = (
        b"--rel\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{}\r\n"
        b"--rel\r\nContent-Type: message/rfc822\r\n\r\n" + raw + b"\r\n--rel--\r\n"
    )
    multipart = api.post(
        "upload/gmail/v1/users/me/messages/send",
        params={"uploadType": "multipart"},
        content=related,
        headers={"Content-Type": "multipart/related; boundary=rel"},
    )
    assert multipart.status_code == 200
    assert (
        bob.get("gmail/v1/users/me/messages", params={"q": "subject:uploaded"}).json()[
            "resultSizeEstimate"
        ]
        == 2
    )
    # Only methods with mediaUpload in discovery have an upload path.
    assert (
        api.post(
            "upload/gmail/v1/users/me/labels", params={"uploadType": "media"}
        ).status_code
        == 404
    )
