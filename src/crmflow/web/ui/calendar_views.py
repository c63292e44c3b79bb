"""What the calendar sync pages show, in words: pure view models and texts.

The routes in :mod:`.calendars` load calendar accounts, runs and conflicts from
:class:`~crmflow.services.calendar_sync.CalendarSync` and turn them into the
values here; the templates only lay them out (and Jinja escapes every value).

Public surface: the choice tables (:data:`DIRECTIONS`, :data:`STRATEGIES`,
:data:`EXPORT_SCOPES`, :data:`DELETE_MODES`), :func:`provider_name`,
:class:`AccountRow` / :func:`account_row`, :class:`RunRow` / :func:`run_row`,
:class:`ConflictView` / :func:`conflict_view`, :func:`span_words` and
:func:`sync_summary` (the toast after a sync).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from crmflow.domain.appointments import TimeSpan, zone
from crmflow.domain.calendar import CalendarEvent, EventStatus, ResponseStatus
from crmflow.domain.calendar_accounts import (
    CalendarAccountInfo,
    ConflictInfo,
    DeleteMode,
    Direction,
    ExportScope,
    RunStatus,
    Strategy,
    SyncRunInfo,
    SyncType,
)
from crmflow.domain.integrations import ProviderKey
from crmflow.web.ui.recurrence import describe_rule


@dataclass(frozen=True, slots=True)
class Choice:
    """One option of a setting, with what it means."""

    value: str
    label: str
    hint: str


DIRECTIONS: tuple[Choice, ...] = (
    Choice(
        Direction.TWO_WAY.value,
        "Two-way",
        "Calendar events come into the CRM and CRM appointments go to the "
        "calendar; a change on either side is copied to the other.",
    ),
    Choice(
        Direction.IMPORT_ONLY.value,
        "Import only",
        "Calendar events come into the CRM; changes made in the CRM stay in the CRM.",
    ),
    Choice(
        Direction.EXPORT_ONLY.value,
        "Export only",
        "CRM appointments go to the calendar; changes made in the calendar are "
        "not brought into the CRM.",
    ),
)

STRATEGIES: tuple[Choice, ...] = (
    Choice(
        Strategy.MANUAL.value,
        "Ask me (Conflicts page)",
        "Nothing is overwritten: both versions wait on the Conflicts page until "
        "you choose one.",
    ),
    Choice(
        Strategy.CRM_WINS.value,
        "CRM wins",
        "The CRM's version replaces the calendar's.",
    ),
    Choice(
        Strategy.CALENDAR_WINS.value,
        "Calendar wins",
        "The calendar's version replaces the CRM's.",
    ),
    Choice(
        Strategy.LATEST_WINS.value,
        "Latest change wins",
        "The version changed last replaces the other. This trusts the clocks of "
        "the calendar provider and of the CRM: if either runs a few minutes off, "
        "the earlier change can win.",
    ),
)

EXPORT_SCOPES: tuple[Choice, ...] = (
    Choice(
        ExportScope.OWN.value,
        "My appointments",
        "Your CRM appointments that no other calendar of yours syncs are added "
        "to this calendar. Only one of your calendars receives them.",
    ),
    Choice(
        ExportScope.NONE.value,
        "Only its own events",
        "Only the events that came from this calendar are kept in sync; other "
        "appointments are not added to it.",
    ),
)

DELETE_MODES: tuple[Choice, ...] = (
    Choice(
        DeleteMode.CANCEL.value,
        "Cancel the appointment",
        "An event deleted in the calendar leaves its appointment in the CRM, "
        "marked cancelled.",
    ),
    Choice(
        DeleteMode.DELETE.value,
        "Delete the appointment",
        "An event deleted in the calendar deletes its appointment in the CRM.",
    ),
)

_PROVIDERS: Mapping[ProviderKey, tuple[str, str]] = {
    ProviderKey.GOOGLE: ("Google", "google"),
    ProviderKey.MICROSOFT: ("Outlook", "microsoft"),
    ProviderKey.CALDAV: ("CalDAV", "caldav"),
    ProviderKey.APPLE: ("iCloud", "apple"),
}

_RUN_STATUS: Mapping[RunStatus, tuple[str, str]] = {
    RunStatus.SUCCESS: ("Synced", "success"),
    RunStatus.PARTIAL: ("Partly synced", "warning"),
    RunStatus.FAILED: ("Failed", "danger"),
    RunStatus.RUNNING: ("Running", "neutral"),
}

_SYNC_TYPES: Mapping[SyncType, str] = {
    SyncType.MANUAL: "Manual",
    SyncType.SCHEDULED: "Scheduled",
    SyncType.WEBHOOK: "Change notice",
    SyncType.FULL: "Full",
}


def label_of(choices: Sequence[Choice], value: str) -> str:
    """The label of ``value`` among ``choices`` (the value itself if unknown)."""
    return next((c.label for c in choices if c.value == value), value)


def provider_name(provider: ProviderKey) -> str:
    """ "Google", "Outlook", "CalDAV", "iCloud"."""
    return _PROVIDERS.get(provider, (provider.value, "caldav"))[0]


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _day(value: dt.date) -> str:
    return f"{value:%a} {value.day} {value:%b %Y}"


def span_words(span: TimeSpan) -> str:
    """When an event happens, in its own zone, with the zone named.

    ``Wed 6 May 2026, 10:00 – 10:45 (America/New York)``; ``Thu 7 May 2026,
    all day``; ``Thu 7 May 2026 – Fri 8 May 2026, all day`` (the stored end day
    is exclusive; people read the last day).
    """
    if span.all_day:
        first, last = span.start_date, span.end_date - dt.timedelta(days=1)
        if last <= first:
            return f"{_day(first)}, all day"
        return f"{_day(first)} – {_day(last)}, all day"
    tz = zone(span.timezone)
    start, end = span.start_at.astimezone(tz), span.end_at.astimezone(tz)
    where = span.timezone.replace("_", " ")
    if start.date() == end.date():
        return f"{_day(start.date())}, {start:%H:%M} – {end:%H:%M} ({where})"
    return (
        f"{_day(start.date())} {start:%H:%M} – {_day(end.date())} {end:%H:%M} ({where})"
    )


def _duration(ms: int | None) -> str:
    if ms is None:
        return "–"
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms // 60_000} min {ms % 60_000 // 1000} s"


# ------------------------------------------------------------------ accounts


@dataclass(frozen=True, slots=True)
class AccountRow:
    """A synced calendar as the Manage calendars page shows it."""

    info: CalendarAccountInfo
    provider: str
    #: CSS modifier of the provider badge (``google``, ``microsoft``, ...)
    brand: str
    #: ``enabled`` / ``paused`` / ``disconnected``
    state: str
    state_text: str
    #: the last run's status in words and its badge tone (None: never synced)
    last_status: str | None
    last_tone: str
    direction: str
    strategy: str

    @property
    def id(self) -> uuid.UUID:
        return self.info.id

    @property
    def connected(self) -> bool:
        return self.info.integration_id is not None


def account_row(info: CalendarAccountInfo) -> AccountRow:
    """What the page shows of ``info``."""
    name, brand = _PROVIDERS.get(info.provider, (info.provider.value, "caldav"))
    if info.integration_id is None:
        state, words = "disconnected", "Disconnected"
    elif info.is_enabled:
        state, words = "enabled", "Syncing"
    else:
        state, words = "paused", "Paused"
    status = _RUN_STATUS.get(info.last_sync_status) if info.last_sync_status else None
    return AccountRow(
        info=info,
        provider=name,
        brand=brand,
        state=state,
        state_text=words,
        last_status=status[0] if status else None,
        last_tone=status[1] if status else "neutral",
        direction=label_of(DIRECTIONS, info.direction.value),
        strategy=label_of(STRATEGIES, info.strategy.value),
    )


# ------------------------------------------------------------------ runs


@dataclass(frozen=True, slots=True)
class RunRow:
    """One line of the sync log."""

    info: SyncRunInfo
    calendar: str
    sync_type: str
    status: str
    tone: str
    duration: str
    messages: tuple[str, ...]


def run_row(info: SyncRunInfo, names: Mapping[uuid.UUID, str]) -> RunRow:
    """What the sync log shows of ``info``; ``names`` maps account ids to names."""
    calendar = (
        names.get(info.calendar_account_id, "A calendar no longer synced")
        if info.calendar_account_id is not None
        else "A calendar no longer synced"
    )
    status, tone = _RUN_STATUS.get(info.status, (info.status.value, "neutral"))
    return RunRow(
        info=info,
        calendar=calendar,
        sync_type=_SYNC_TYPES.get(info.sync_type, info.sync_type.value),
        status=status,
        tone=tone,
        duration=_duration(info.duration_ms),
        messages=tuple(
            f"{e.title}: {e.message}" if e.title else e.message for e in info.errors
        ),
    )


def sync_summary(runs: Sequence[SyncRunInfo]) -> str:
    """The toast after runs that did not fail as a whole.

    ``Synced 1 calendar account: 2 imported, 1 exported, 0 conflicts``;
    updates and deletions are named only when there were any.
    """
    imported = sum(r.events_imported for r in runs)
    exported = sum(r.events_exported for r in runs)
    updated = sum(r.events_updated for r in runs)
    deleted = sum(r.events_deleted for r in runs)
    conflicts = sum(r.conflicts for r in runs)
    counts = [f"{imported} imported", f"{exported} exported"]
    if updated:
        counts.append(f"{updated} updated")
    if deleted:
        counts.append(f"{deleted} deleted")
    counts.append(_plural(conflicts, "conflict"))
    return f"Synced {_plural(len(runs), 'calendar account')}: " + ", ".join(counts)


# ------------------------------------------------------------------ conflicts


@dataclass(frozen=True, slots=True)
class FieldPair:
    """One synced field of a conflict, both versions."""

    label: str
    crm: tuple[str, ...]
    calendar: tuple[str, ...]

    @property
    def differs(self) -> bool:
        return self.crm != self.calendar


@dataclass(frozen=True, slots=True)
class ConflictView:
    """A conflict laid out side by side."""

    info: ConflictInfo
    calendar_name: str
    provider: str
    title: str
    fields: tuple[FieldPair, ...]

    @property
    def id(self) -> uuid.UUID:
        return self.info.id

    @property
    def differing(self) -> tuple[str, ...]:
        return tuple(f.label for f in self.fields if f.differs)


_ANSWERS: Mapping[ResponseStatus, str] = {
    ResponseStatus.NEEDS_ACTION: "no answer yet",
    ResponseStatus.ACCEPTED: "accepted",
    ResponseStatus.DECLINED: "declined",
    ResponseStatus.TENTATIVE: "maybe",
}


def _attendees(event: CalendarEvent) -> tuple[str, ...]:
    out: list[str] = []
    for a in sorted(event.attendees, key=lambda a: a.email.casefold()):
        who = f"{a.name} <{a.email}>" if a.name else a.email
        answer = _ANSWERS.get(a.response_status, a.response_status.value)
        out.append(f"{who} ({answer})")
    return tuple(out) or ("none",)


def _recurrence(event: CalendarEvent) -> tuple[str, ...]:
    if not event.recurrence:
        return ("does not repeat",)
    lines: list[str] = []
    for line in event.recurrence:
        head = line.split(":", 1)[0].split(";", 1)[0].upper()
        if head == "RRULE":
            words = describe_rule(line)
            lines.append(words[:1].upper() + words[1:])
        elif head == "EXDATE":
            lines.append("Skips: " + line.split(":", 1)[-1])
        elif head == "RDATE":
            lines.append("Also on: " + line.split(":", 1)[-1])
        else:
            lines.append(line)
    moved = [e for e in event.exceptions if e.status is not EventStatus.CANCELLED]
    cancelled = len(event.exceptions) - len(moved)
    if moved:
        lines.append(f"{_plural(len(moved), 'occurrence')} changed")
    if cancelled:
        lines.append(f"{_plural(cancelled, 'occurrence')} cancelled")
    return tuple(lines)


def _fields(event: CalendarEvent) -> dict[str, tuple[str, ...]]:
    return {
        "Title": (event.title,),
        "When": (span_words(event.span),),
        "All day": ("yes" if event.span.all_day else "no",),
        "Location": (event.location or "none",),
        "Description": (event.description or "none",),
        "Attendees": _attendees(event),
        "Repeats": _recurrence(event),
        "Status": (event.status.value.capitalize(),),
    }


def conflict_view(
    info: ConflictInfo, account: CalendarAccountInfo | None
) -> ConflictView:
    """Both versions of ``info``, field by field (differing fields marked)."""
    crm, calendar = _fields(info.crm_event), _fields(info.calendar_event)
    return ConflictView(
        info=info,
        calendar_name=account.name if account else "a calendar no longer synced",
        provider=provider_name(account.provider) if account else "Calendar",
        title=info.crm_event.title or info.calendar_event.title,
        fields=tuple(FieldPair(k, crm[k], calendar[k]) for k in crm),
    )
