"""``/api/calendar-accounts`` (synced calendars, syncing, the sync log) and
``/api/calendar-conflicts`` (events changed differently on both sides).

Bearer-token endpoints acting as the token's user; another user's calendar
account, run or conflict is 404.

============================================================  ==================================
``GET    /api/calendar-accounts``                             the user's synced calendars
``GET    /api/calendar-accounts/choices?integration_id=``      calendars an integration offers
``POST   /api/calendar-accounts``                             start syncing one (201)
``GET    /api/calendar-accounts/{id}``                        one
``PATCH  /api/calendar-accounts/{id}``                        direction, strategy, export, ...
``DELETE /api/calendar-accounts/{id}``                        stop syncing (appointments stay)
``POST   /api/calendar-accounts/{id}/sync``                   sync now; returns the run summary
``POST   /api/calendar-accounts/sync``                        sync every enabled calendar
``GET    /api/calendar-sync-log?account_id=``                 runs, newest first
``GET    /api/calendar-conflicts?status=open|resolved|all``   conflicts
``GET    /api/calendar-conflicts/{id}``                       one, with both versions
``POST   /api/calendar-conflicts/{id}/resolve``               keep ``crm`` or ``calendar``
============================================================  ==================================

A sync that fails as a whole (the grant is gone, the provider is down, a
calendar that suddenly lists nothing) still answers 200 with the run's summary:
``status`` is ``failed`` and ``errors[0]`` says what happened and what to do
(``code`` ``mass_delete``: repeat with ``confirm_mass_delete=true``; ``reconnect``).
A sync already running for that calendar is 409.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from crmflow.domain.calendar import CalendarEvent
from crmflow.domain.calendar_accounts import (
    CalendarAccountInfo,
    CalendarChoice,
    ConflictInfo,
    ConflictStatus,
    DeleteMode,
    Direction,
    ExportScope,
    Resolution,
    RunStatus,
    Strategy,
    SyncRunInfo,
    SyncType,
)
from crmflow.domain.integrations import ProviderKey
from crmflow.services.calendar_sync import CalendarSync
from crmflow.web.api.integrations import (
    IntegrationsDep,
    ProviderErrorRoute,
)
from crmflow.web.api.schemas import Strict
from crmflow.web.deps import TenantDep


def get_calendar_sync(request: Request, integrations: IntegrationsDep) -> CalendarSync:
    """The process's calendar sync service (shares the connections service)."""
    found = getattr(request.app.state, "calendar_sync", None)
    if isinstance(found, CalendarSync):
        return found
    created = CalendarSync(integrations)
    request.app.state.calendar_sync = created
    return created


CalendarSyncDep = Annotated[CalendarSync, Depends(get_calendar_sync)]

router = APIRouter(
    prefix="/api", tags=["calendar sync"], route_class=ProviderErrorRoute
)


# ------------------------------------------------------------------ schemas


class CalendarChoiceOut(BaseModel):
    id: str = Field(description="Pass it as calendar_id to add the calendar.")
    name: str
    read_only: bool = Field(description="Synced import-only.")
    primary: bool

    @classmethod
    def of(cls, c: CalendarChoice) -> CalendarChoiceOut:
        return cls(id=c.id, name=c.name, read_only=c.read_only, primary=c.primary)


class CalendarAccountOut(BaseModel):
    id: uuid.UUID
    integration_id: uuid.UUID | None = Field(
        description="None: the connection was removed; the account is kept, disabled."
    )
    provider: ProviderKey
    calendar_id: str
    name: str
    direction: Direction
    strategy: Strategy
    export_scope: ExportScope
    delete_mode: DeleteMode
    is_enabled: bool
    last_synced_at: dt.datetime | None
    last_sync_status: RunStatus | None
    last_error: str | None
    mapped_events: int
    open_conflicts: int
    created_at: dt.datetime
    next_sync_at: dt.datetime | None = Field(
        description="When the background sync runs next (None: as soon as it can)."
    )
    sync_failures: int = Field(
        description="Background runs that failed in a row (they back off)."
    )

    @classmethod
    def of(cls, a: CalendarAccountInfo) -> CalendarAccountOut:
        return cls(
            id=a.id,
            integration_id=a.integration_id,
            provider=a.provider,
            calendar_id=a.external_calendar_id,
            name=a.name,
            direction=a.direction,
            strategy=a.strategy,
            export_scope=a.export_scope,
            delete_mode=a.delete_mode,
            is_enabled=a.is_enabled,
            last_synced_at=a.last_synced_at,
            last_sync_status=a.last_sync_status,
            last_error=a.last_error,
            mapped_events=a.mapped_events,
            open_conflicts=a.open_conflicts,
            created_at=a.created_at,
            next_sync_at=a.next_sync_at,
            sync_failures=a.sync_failures,
        )


class CalendarAccountIn(Strict):
    integration_id: uuid.UUID
    calendar_id: str = Field(min_length=1, max_length=1024)
    direction: Direction = Direction.TWO_WAY
    strategy: Strategy = Strategy.MANUAL
    export_scope: ExportScope | None = Field(
        default=None,
        description="Default: own for the user's first calendar, none after that.",
    )
    delete_mode: DeleteMode = DeleteMode.CANCEL


class CalendarAccountPatch(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=500)
    direction: Direction | None = None
    strategy: Strategy | None = None
    export_scope: ExportScope | None = None
    delete_mode: DeleteMode | None = None
    is_enabled: bool | None = None


class SyncErrorOut(BaseModel):
    message: str
    ical_uid: str | None
    code: str | None


class SyncRunOut(BaseModel):
    id: uuid.UUID
    calendar_account_id: uuid.UUID | None
    sync_type: SyncType
    direction: Direction
    status: RunStatus
    started_at: dt.datetime
    finished_at: dt.datetime | None
    duration_ms: int | None
    events_imported: int
    events_exported: int
    events_updated: int
    events_deleted: int
    conflicts: int
    errors: list[SyncErrorOut]

    @classmethod
    def of(cls, r: SyncRunInfo) -> SyncRunOut:
        return cls(
            id=r.id,
            calendar_account_id=r.calendar_account_id,
            sync_type=r.sync_type,
            direction=r.direction,
            status=r.status,
            started_at=r.started_at,
            finished_at=r.finished_at,
            duration_ms=r.duration_ms,
            events_imported=r.events_imported,
            events_exported=r.events_exported,
            events_updated=r.events_updated,
            events_deleted=r.events_deleted,
            conflicts=r.conflicts,
            errors=[
                SyncErrorOut(message=e.message, ical_uid=e.ical_uid, code=e.code)
                for e in r.errors
            ],
        )


class EventOut(BaseModel):
    """One version of an event (the synced fields)."""

    title: str
    start_at: dt.datetime
    end_at: dt.datetime
    timezone: str
    all_day: bool
    description: str | None
    location: str | None
    status: str
    attendees: list[dict[str, Any]]
    recurrence: list[str]
    exceptions: int = Field(description="How many occurrences differ from the rule.")

    @classmethod
    def of(cls, e: CalendarEvent) -> EventOut:
        return cls(
            title=e.title,
            start_at=e.span.start_at,
            end_at=e.span.end_at,
            timezone=e.span.timezone,
            all_day=e.span.all_day,
            description=e.description,
            location=e.location,
            status=e.status.value,
            attendees=[
                {
                    "email": a.email,
                    "name": a.name,
                    "response_status": a.response_status.value,
                }
                for a in e.attendees
            ],
            recurrence=list(e.recurrence),
            exceptions=len(e.exceptions),
        )


class ConflictOut(BaseModel):
    id: uuid.UUID
    calendar_account_id: uuid.UUID
    ical_uid: str
    appointment_id: uuid.UUID | None
    external_event_id: str
    crm: EventOut
    crm_updated_at: dt.datetime | None
    calendar: EventOut
    calendar_updated_at: dt.datetime | None
    status: ConflictStatus
    resolution: Resolution | None
    created_at: dt.datetime
    resolved_at: dt.datetime | None

    @classmethod
    def of(cls, c: ConflictInfo) -> ConflictOut:
        return cls(
            id=c.id,
            calendar_account_id=c.calendar_account_id,
            ical_uid=c.ical_uid,
            appointment_id=c.appointment_id,
            external_event_id=c.external_event_id,
            crm=EventOut.of(c.crm_event),
            crm_updated_at=c.crm_updated_at,
            calendar=EventOut.of(c.calendar_event),
            calendar_updated_at=c.calendar_updated_at,
            status=c.status,
            resolution=c.resolution,
            created_at=c.created_at,
            resolved_at=c.resolved_at,
        )


class ResolveIn(Strict):
    keep: Literal["crm", "calendar"] = Field(description="Which version to keep.")


class ResolveOut(BaseModel):
    conflict: ConflictOut
    run: SyncRunOut = Field(description="The sync that applied the choice.")


# ------------------------------------------------------------------ routes


@router.get("/calendar-accounts")
async def list_accounts(
    ctx: TenantDep, service: CalendarSyncDep
) -> list[CalendarAccountOut]:
    """The user's synced calendars."""
    return [CalendarAccountOut.of(a) for a in await service.accounts(ctx)]


@router.get("/calendar-accounts/choices")
async def calendar_choices(
    ctx: TenantDep,
    service: CalendarSyncDep,
    integration_id: Annotated[uuid.UUID, Query()],
) -> list[CalendarChoiceOut]:
    """The calendars a connected calendar integration offers."""
    return [
        CalendarChoiceOut.of(c) for c in await service.calendars(ctx, integration_id)
    ]


@router.post("/calendar-accounts", status_code=201)
async def add_account(
    body: CalendarAccountIn, ctx: TenantDep, service: CalendarSyncDep
) -> CalendarAccountOut:
    """Start syncing a calendar (nothing is synced until the first sync)."""
    return CalendarAccountOut.of(
        await service.add_account(
            ctx,
            body.integration_id,
            body.calendar_id,
            direction=body.direction,
            strategy=body.strategy,
            export_scope=body.export_scope,
            delete_mode=body.delete_mode,
        )
    )


@router.post("/calendar-accounts/sync")
async def sync_all(ctx: TenantDep, service: CalendarSyncDep) -> list[SyncRunOut]:
    """Sync every enabled calendar of the user, one after the other."""
    return [SyncRunOut.of(r) for r in await service.sync_all(ctx)]


@router.get("/calendar-accounts/{account_id}")
async def get_account(
    account_id: uuid.UUID, ctx: TenantDep, service: CalendarSyncDep
) -> CalendarAccountOut:
    return CalendarAccountOut.of(await service.account(ctx, account_id))


@router.patch("/calendar-accounts/{account_id}")
async def update_account(
    account_id: uuid.UUID,
    body: CalendarAccountPatch,
    ctx: TenantDep,
    service: CalendarSyncDep,
) -> CalendarAccountOut:
    """Change how a calendar syncs; omitted fields stay."""
    changes = {
        k: (v.value if hasattr(v, "value") else v)
        for k, v in body.model_dump(exclude_none=True).items()
    }
    return CalendarAccountOut.of(await service.update_account(ctx, account_id, changes))


@router.delete("/calendar-accounts/{account_id}", status_code=204)
async def remove_account(
    account_id: uuid.UUID, ctx: TenantDep, service: CalendarSyncDep
) -> Response:
    """Stop syncing; appointments and calendar events both stay."""
    await service.remove_account(ctx, account_id)
    return Response(status_code=204)


@router.post("/calendar-accounts/{account_id}/sync")
async def sync_account(
    account_id: uuid.UUID,
    ctx: TenantDep,
    service: CalendarSyncDep,
    full: Annotated[
        bool, Query(description="List everything instead of following changes.")
    ] = False,
    confirm_mass_delete: Annotated[
        bool,
        Query(description="Carry out deletions although one side lists nothing."),
    ] = False,
) -> SyncRunOut:
    """Sync one calendar now and return the run's summary."""
    run = await service.sync(
        ctx,
        account_id,
        sync_type=SyncType.FULL if full else SyncType.MANUAL,
        confirm_mass_delete=confirm_mass_delete,
    )
    return SyncRunOut.of(run)


@router.get("/calendar-sync-log")
async def sync_log(
    ctx: TenantDep,
    service: CalendarSyncDep,
    account_id: Annotated[uuid.UUID | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[SyncRunOut]:
    """The sync log, newest first."""
    return [SyncRunOut.of(r) for r in await service.runs(ctx, account_id, limit=limit)]


@router.get("/calendar-conflicts")
async def list_conflicts(
    ctx: TenantDep,
    service: CalendarSyncDep,
    status: Annotated[Literal["open", "resolved", "all"], Query()] = "open",
) -> list[ConflictOut]:
    """Conflicts (open ones wait for a person)."""
    wanted = None if status == "all" else ConflictStatus(status)
    return [ConflictOut.of(c) for c in await service.conflicts(ctx, status=wanted)]


@router.get("/calendar-conflicts/{conflict_id}")
async def get_conflict(
    conflict_id: uuid.UUID, ctx: TenantDep, service: CalendarSyncDep
) -> ConflictOut:
    return ConflictOut.of(await service.conflict(ctx, conflict_id))


@router.post("/calendar-conflicts/{conflict_id}/resolve")
async def resolve_conflict(
    conflict_id: uuid.UUID,
    body: ResolveIn,
    ctx: TenantDep,
    service: CalendarSyncDep,
) -> ResolveOut:
    """Keep one version; the calendar is synced at once to apply it. If either
    version changed meanwhile, the conflict stays open with the new versions."""
    resolution = Resolution.KEEP_CRM if body.keep == "crm" else Resolution.KEEP_CALENDAR
    conflict, run = await service.resolve(ctx, conflict_id, resolution)
    return ResolveOut(conflict=ConflictOut.of(conflict), run=SyncRunOut.of(run))
