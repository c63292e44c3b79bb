"""``CalendarEvent``: validation and the content hash over synced fields only."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import replace

import pytest

from crmflow.domain.appointments import TimeSpan, all_day_span, timed_span
from crmflow.domain.calendar import (
    Attendee,
    CalendarEvent,
    CalendarProvider,
    Capability,
    Changes,
    EventStatus,
    Listing,
    Notify,
    RecurrenceException,
    RemoteEvent,
    ResponseStatus,
    Written,
)
from crmflow.errors import ValidationFailed

from .helpers import event

UTC = dt.UTC
WEEKLY = ("RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=5",)
START = dt.datetime(2026, 3, 2, 8, tzinfo=UTC)


def test_event_keeps_its_fields():
    e = event(
        "uid-1",
        "Kick-off",
        description="Agenda",
        location="Room 1",
        attendees=(Attendee("ann@example.com", "Ann", ResponseStatus.ACCEPTED),),
        status=EventStatus.TENTATIVE,
    )
    assert (e.ical_uid, e.title, e.status) == (
        "uid-1",
        "Kick-off",
        EventStatus.TENTATIVE,
    )
    assert e.span.start_at == START


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: event(""), "needs an ical_uid"),
        (
            lambda: replace(
                event("x"),
                span=TimeSpan(START.replace(tzinfo=None), START, "UTC", False),
            ),
            "aware",
        ),
        (
            lambda: replace(event("x"), span=TimeSpan(START, START, "UTC", False)),
            "after the start",
        ),
        (
            lambda: replace(
                event("x"),
                span=TimeSpan(
                    START, START + dt.timedelta(hours=1), "Mars/Olympus", False
                ),
            ),
            "Unknown time zone",
        ),
        (lambda: event("x", recurrence=("FREQ=WEEKLY",)), "not an RRULE"),
        (
            lambda: event("x", recurrence=("RRULE:FREQ=DAILY\nRRULE:FREQ=WEEKLY",)),
            "not an RRULE",
        ),
        (
            lambda: event("x", exceptions=(RecurrenceException(dt.date(2026, 3, 9)),)),
            "Only a recurring event",
        ),
        (
            lambda: event(
                "x",
                recurrence=WEEKLY,
                exceptions=(
                    RecurrenceException(START),
                    RecurrenceException(
                        START.astimezone(dt.timezone(dt.timedelta(hours=1)))
                    ),
                ),
            ),
            "same original start",
        ),
        (lambda: RecurrenceException(dt.datetime(2026, 3, 9, 9)), "aware time"),
        (
            lambda: RecurrenceException(
                START, span=TimeSpan(START, START, "UTC", False)
            ),
            "after the start",
        ),
    ],
)
def test_invalid_events_are_refused(build, message):
    with pytest.raises(ValidationFailed, match=message):
        build()


def test_exceptions_are_keyed_by_original_start():
    moved = RecurrenceException(
        START + dt.timedelta(days=7),
        span=timed_span(
            dt.datetime(2026, 3, 9, 11), dt.datetime(2026, 3, 9, 12), "Europe/Berlin"
        ),
    )
    e = event("x", recurrence=WEEKLY, exceptions=(moved,))
    # the same instant in another zone finds it; another start does not
    berlin = dt.timezone(dt.timedelta(hours=1))
    assert e.exception_at((START + dt.timedelta(days=7)).astimezone(berlin)) is moved
    assert e.exception_at(START) is None
    assert moved.key == "2026-03-09T08:00:00+00:00"
    assert RecurrenceException(dt.date(2026, 3, 9)).key == "2026-03-09"


# ------------------------------------------------------------------ content hash


def _same(a: CalendarEvent, b: CalendarEvent) -> bool:
    return a.content_hash() == b.content_hash()


ANN = Attendee("Ann@Example.com", "Ann  Smith", ResponseStatus.ACCEPTED)
BOB = Attendee("bob@example.com")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # the ident is not content
        (event("one"), event("two")),
        # attendee order and e-mail letter case
        (
            event("x", attendees=(ANN, BOB)),
            event(
                "x",
                attendees=(
                    BOB,
                    Attendee(" ann@example.com ", "Ann Smith", ResponseStatus.ACCEPTED),
                ),
            ),
        ),
        # whitespace, line endings, None versus empty
        (
            event(
                "x",
                "  Weekly   sync ",
                description="line 1  \r\nline 2\r\n",
                location=None,
            ),
            event("x", "Weekly sync", description="line 1\nline 2", location=""),
        ),
        # RRULE part order and case; EXDATE value order; line order
        (
            event(
                "x",
                recurrence=(
                    "RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=5",
                    "EXDATE:20260309T080000Z,20260316T080000Z",
                ),
            ),
            event(
                "x",
                recurrence=(
                    "exdate:20260316T080000Z,20260309T080000Z",
                    "rrule:count=5;byday=mo;freq=weekly",
                ),
            ),
        ),
        # an exception field that repeats the series is the series' value
        (
            event(
                "x",
                recurrence=WEEKLY,
                exceptions=(RecurrenceException(START, title="Meeting", location=""),),
            ),
            event("x", recurrence=WEEKLY, exceptions=(RecurrenceException(START),)),
        ),
        # exception order
        (
            event(
                "x",
                recurrence=WEEKLY,
                exceptions=(
                    RecurrenceException(START, EventStatus.CANCELLED),
                    RecurrenceException(START + dt.timedelta(days=7), title="Moved"),
                ),
            ),
            event(
                "x",
                recurrence=WEEKLY,
                exceptions=(
                    RecurrenceException(START + dt.timedelta(days=7), title="Moved"),
                    RecurrenceException(START, EventStatus.CANCELLED),
                ),
            ),
        ),
        # an all-day event hashes its dates, not its zone
        (
            replace(
                event("x"),
                span=all_day_span(dt.date(2026, 5, 3), None, "Europe/Berlin"),
            ),
            replace(
                event("x"),
                span=all_day_span(dt.date(2026, 5, 3), None, "America/Los_Angeles"),
            ),
        ),
    ],
)
def test_hash_ignores_what_sides_rewrite(a, b):
    assert _same(a, b)


@pytest.mark.parametrize(
    "change",
    [
        {"title": "Other"},
        {"description": "Agenda"},
        {"location": "Room 2"},
        {"status": EventStatus.CANCELLED},
        {"attendees": (BOB,)},
        {"attendees": (replace(ANN, response_status=ResponseStatus.DECLINED),)},
        {"recurrence": WEEKLY},
        {
            "span": timed_span(
                dt.datetime(2026, 3, 2, 9), dt.datetime(2026, 3, 2, 11), "Europe/Berlin"
            )
        },
        # same instants, another zone: a synced field
        {"span": TimeSpan(START, START + dt.timedelta(hours=1), "Europe/Paris", False)},
        {"span": all_day_span(dt.date(2026, 3, 2), None, "Europe/Berlin")},
    ],
)
def test_hash_changes_with_every_synced_field(change):
    base = event("x", attendees=(ANN,))
    assert not _same(base, replace(base, **change))


@pytest.mark.parametrize(
    "exception",
    [
        RecurrenceException(START, EventStatus.CANCELLED),
        RecurrenceException(START, title="Moved"),
        RecurrenceException(START, description="Changed agenda"),
        RecurrenceException(START, location="Room 9"),
        RecurrenceException(START, attendees=(BOB,)),
        RecurrenceException(
            START,
            span=timed_span(
                dt.datetime(2026, 3, 2, 14),
                dt.datetime(2026, 3, 2, 15),
                "Europe/Berlin",
            ),
        ),
        RecurrenceException(START + dt.timedelta(days=7)),
    ],
)
def test_hash_changes_with_every_exception_field(exception):
    plain = event("x", recurrence=WEEKLY, exceptions=(RecurrenceException(START),))
    assert not _same(plain, replace(plain, exceptions=(exception,)))


def test_an_override_repeating_the_series_changes_nothing():
    series = event(
        "x", "Weekly", recurrence=WEEKLY, description="Agenda", location="Room 1"
    )
    assert RecurrenceException(START).repeats(series)
    # every field set to what the series has, written differently
    assert RecurrenceException(
        START, title=" Weekly ", description="Agenda\r\n", location="Room 1"
    ).repeats(series)
    for differs in (
        RecurrenceException(START, EventStatus.CANCELLED),
        RecurrenceException(START, EventStatus.TENTATIVE),
        RecurrenceException(START, title="Moved"),
        RecurrenceException(START, location="Room 9"),
        RecurrenceException(START, attendees=(BOB,)),
        RecurrenceException(
            START, span=timed_span(START, START + dt.timedelta(hours=2), "UTC")
        ),
    ):
        assert not differs.repeats(series), differs


def test_hash_is_stable_hex():
    digest = event("x").content_hash()
    assert digest == event("x").content_hash()
    assert len(digest) == 64
    int(digest, 16)


# ------------------------------------------------------------------ port values


class _Bare(CalendarProvider):
    """The least an adapter writes; shows the port's defaults."""

    @property
    def capabilities(self) -> frozenset[Capability]:
        return frozenset()

    async def list(self) -> Listing:
        return Listing({})

    async def list_changes(self, cursor: str) -> Changes:
        return Changes({}, frozenset(), cursor)

    async def get_many(self, remote_ids: Sequence[str]) -> Sequence[RemoteEvent]:
        return []

    async def create(
        self, event: CalendarEvent, *, idempotency_key: str, notify: Notify
    ) -> Written:
        return Written("id", None)

    async def update(
        self, remote_id: str, event: CalendarEvent, *, if_match: str, notify: Notify
    ) -> str | None:
        return None

    async def delete(self, remote_id: str, *, if_match: str, notify: Notify) -> None:
        return None


async def test_port_defaults():
    bare = _Bare()
    assert bare.get_many_limit is None
    assert (await bare.list()).cursor is None
    assert Written("id", None).adopted is False
    assert [n.value for n in Notify] == ["none", "all"]
