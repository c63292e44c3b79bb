from __future__ import annotations

from collections.abc import Callable

from crmflow.mail.threading import MAX_LOOKUP_IDS, thread_key


def store(threads: dict[str, str]) -> Callable[[tuple[str, ...]], str | None]:
    """A message store: Message-ID -> thread key; answers for the first known id."""

    def known(ids: tuple[str, ...]) -> str | None:
        return next((threads[i] for i in ids if i in threads), None)

    return known


NOTHING = store({})


def test_new_message_starts_a_thread_keyed_by_its_own_id() -> None:
    assert thread_key("<a@x>", None, (), None, NOTHING) == "<a@x>"


def test_reply_joins_the_thread_of_its_parent() -> None:
    known = store({"<parent@x>": "T1"})
    assert thread_key("<reply@x>", "<parent@x>", ("<parent@x>",), None, known) == "T1"


def test_in_reply_to_wins_over_references() -> None:
    known = store({"<root@x>": "T-root", "<parent@x>": "T-parent"})
    key = thread_key("<r@x>", "<parent@x>", ("<root@x>", "<other@x>"), None, known)
    assert key == "T-parent"


def test_newest_reference_wins_over_older_ones() -> None:
    known = store({"<root@x>": "T-root", "<middle@x>": "T-middle"})
    key = thread_key(
        "<r@x>", None, ("<root@x>", "<middle@x>", "<unknown@x>"), None, known
    )
    assert key == "T-middle"


def test_an_already_stored_message_keeps_its_thread() -> None:
    # the sent copy of a message the CRM sent, or the same mail in a second mailbox
    known = store({"<sent@x>": "T-sent", "<parent@x>": "T-parent"})
    assert thread_key("<sent@x>", "<parent@x>", (), "gmail-thread", known) == "T-sent"


def test_known_reference_wins_over_the_provider_thread() -> None:
    known = store({"<parent@x>": "T1"})
    assert thread_key("<r@x>", "<parent@x>", (), "gmail-123", known) == "T1"


def test_provider_thread_when_nothing_is_known() -> None:
    assert (
        thread_key("<r@x>", "<parent@x>", ("<parent@x>",), "gmail-123", NOTHING)
        == "p:gmail-123"
    )
    assert thread_key(None, None, (), " conv-1 ", NOTHING) == "p:conv-1"


def test_subjects_play_no_part() -> None:
    # two unrelated messages never share a thread, whatever their subjects
    assert thread_key("<a@x>", None, (), None, NOTHING) != thread_key(
        "<b@x>", None, (), None, NOTHING
    )


def test_orphaned_replies_meet_at_the_root_in_any_order() -> None:
    # fetched newest first over IMAP: no provider thread, no ancestor stored yet
    threads: dict[str, str] = {}
    arrivals = [
        ("<c@x>", "<b@x>", ("<a@x>", "<b@x>")),
        ("<b@x>", "<a@x>", ("<a@x>",)),
        ("<a@x>", None, ()),
    ]
    keys = []
    for message_id, parent, refs in arrivals:
        key = thread_key(message_id, parent, refs, None, store(threads))
        threads[message_id] = key
        keys.append(key)
    assert keys == ["<a@x>", "<a@x>", "<a@x>"]


def test_in_reply_to_without_references_is_the_root() -> None:
    assert thread_key("<r@x>", "<parent@x>", (), None, NOTHING) == "<parent@x>"


def test_message_without_any_id_gets_a_fresh_key() -> None:
    first = thread_key(None, None, (), None, NOTHING)
    second = thread_key(None, "", ("  ",), "", NOTHING)
    assert first.startswith("g:")
    assert second.startswith("g:")
    assert first != second


def test_a_known_ancestor_deep_in_a_huge_reference_list_is_found_from_the_newest_end() -> (
    None
):
    refs = tuple(f"<{i}@x>" for i in range(5000))
    known = store({"<4990@x>": "T-recent", "<2500@x>": "T-middle"})
    assert thread_key("<r@x>", None, refs, None, known) == "T-recent"
    # the root is always looked up too
    assert thread_key("<r@x>", None, refs, None, store({"<0@x>": "T-root"})) == "T-root"


def test_only_the_newest_references_are_looked_up() -> None:
    refs = tuple(f"<{i}@x>" for i in range(5000))
    middle = store({"<2500@x>": "T-middle"})
    # far from both ends: not looked up, so the thread is the root's
    assert thread_key("<r@x>", None, refs, None, middle) == "<0@x>"
    recent = store({f"<{5000 - MAX_LOOKUP_IDS // 2}@x>": "T-recent"})
    assert thread_key("<r@x>", None, refs, None, recent) == "T-recent"
