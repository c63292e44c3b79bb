"""Freezing a process's start-up objects for the garbage collector."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from crmflow.heap import freeze_startup_objects


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


def test_start_up_objects_leave_the_collections_and_garbage_goes_first(
    unfrozen: None,
) -> None:
    kept = [Node()]
    garbage = Node()
    garbage.other = Node()
    garbage.other.other = garbage  # a cycle: only a collection frees it
    gone = weakref.ref(garbage)
    del garbage
    assert gone() is not None

    before = gc.get_freeze_count()
    freeze_startup_objects()

    assert gone() is None  # collected before the freeze, not kept for good
    assert gc.get_freeze_count() > before
    # the frozen objects are no longer walked by a collection
    assert not any(o is kept for o in gc.get_objects())
    assert not any(o is kept[0] for o in gc.get_objects())
    # objects made later are collected as usual
    later = Node()
    later.other = later
    after = weakref.ref(later)
    del later
    gc.collect()
    assert after() is None
