"""The garbage collector in long-running crmflow processes."""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Leave every object that exists now out of all later collections.

    Call once a process has imported its modules and built its long-lived
    objects (settings, database engines, the web app), before it takes work.
    A full collection walks every object the collector tracks, and a crmflow
    process holds about 150,000 after its imports, nearly all of them for
    good (functions, classes, SQLAlchemy's mapped metadata): walking them
    took 70-110 ms on a 2-core test machine, a pause of the whole event loop
    (every request, every sync) whenever the allocations of ordinary work
    trigger one. Frozen, they are never walked again; objects made later are
    collected as usual. Garbage among the frozen ones would never be freed,
    so a collection runs first.
    """
    gc.collect()
    gc.freeze()
