"""Graph calendar endpoints: ``/me``, calendars, events, calendarView, instances, calendarView delta.

Rules live in :mod:`.events` and :mod:`.delta`; this module parses requests,
applies OData options and renders (microsoft-graph.md §2-§3):

* calendarView and ``/instances`` require ``startDateTime`` and
  ``endDateTime``; otherwise 400 ``ErrorInvalidParameter`` "This request
  requires a time window specified by the query string parameters
  StartDateTime and EndDateTime." (observed). The window is not affected by
  ``Prefer: outlook.timezone``.
* Lists: default page 10, ``$top`` ≤ 1000, ``@odata.nextLink`` with ``$skip``.
* POST answers 201, PATCH 200 (with the event), DELETE 204. POST/PATCH
  responses render ``start``/``end`` in the request's zone when no ``Prefer``
  header is sent (as the docs' samples do); reads are UTC by default.
* calendarView delta: ``$select``/``$filter``/``$orderby``/``$expand``/``$search``
  are not supported (400); pages honour ``Prefer: odata.maxpagesize``; the
  response carries ``Preference-Applied: odata.track-changes``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from starlette.responses import Response

from crmflow.sandbox.microsoft import _ids
from crmflow.sandbox.microsoft.api_notify import notify
from crmflow.sandbox.microsoft.delta import (
    CurrentItem,
    Deltas,
    sync_state_not_found,
    token_params,
)
from crmflow.sandbox.microsoft.errors import GraphError, bad_request
from crmflow.sandbox.microsoft.eventjson import EVENT_PROPERTIES
from crmflow.sandbox.microsoft.events import Calendars, EventView, RenderOptions
from crmflow.sandbox.microsoft.faults import GraphFaultKind
from crmflow.sandbox.microsoft.odata import (
    DEFAULT_PAGE_SIZE,
    check_select,
    extended_id_equal,
    next_link,
    parse_expand_extended,
    parse_filter,
)
from crmflow.sandbox.microsoft.router import (
    CAL_READ,
    CAL_WRITE,
    USER_READ,
    Context,
    GraphRoute,
)
from crmflow.sandbox.microsoft.timezones import format_utc, parse_instant, resolve_zone

__all__ = ["ROUTES", "read_body"]

#: observed message for a calendarView without its window
WINDOW_REQUIRED = (
    "This request requires a time window specified by the query string parameters "
    "StartDateTime and EndDateTime."
)
_DELTA_UNSUPPORTED = ("$select", "$filter", "$orderby", "$expand", "$search")


async def read_body(ctx: Context) -> dict[str, Any]:
    """Parse a JSON object body.

    Raises:
        GraphError: 400 BadRequest with Graph's message for unreadable JSON.
    """
    raw = await ctx.request.body()
    try:
        data = json.loads(raw or b"null")
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise bad_request(
            "Unable to read JSON request payload. Please ensure Content-Type header is set "
            "and payload is of valid JSON format."
        )
    return data


def _calendars(ctx: Context) -> Calendars:
    return ctx.store.calendars(ctx.email)


def _options(ctx: Context, *, write_zone: str | None = None) -> RenderOptions:
    zone = ctx.prefer_zone()
    if zone is None and write_zone is not None:
        zone = (write_zone, resolve_zone(write_zone))
    select = ctx.query.select
    check_select(select, EVENT_PROPERTIES, "microsoft.graph.event")
    return RenderOptions(
        zone=zone,
        prefer_text_body=ctx.prefer_text_body(),
        select=select,
        expand_extended=parse_expand_extended(ctx.query.expand),
    )


def _render(ctx: Context, view: EventView, options: RenderOptions) -> dict[str, Any]:
    data = view.render(ctx.base_url, ctx.email, options)
    if options.expand_extended:
        wanted = options.expand_extended
        data["singleValueExtendedProperties"] = [
            dict(p)
            for p in view.event.extended
            if any(extended_id_equal(p["id"], w) for w in wanted)
        ]
    return data


def _resolver(view: EventView) -> Any:
    def resolve(path: str) -> Any:
        key = path.casefold()
        table: dict[str, Any] = {
            "subject": view.prop("subject"),
            "type": view.kind,
            "icaluid": view.event.ical_uid,
            "iscancelled": view.event.is_cancelled,
            "isallday": view.event.is_all_day,
            "showas": view.prop("showAs"),
            "importance": view.prop("importance"),
            "sensitivity": view.prop("sensitivity"),
            "seriesmasterid": view.series_master_id,
            "start/datetime": view.start,
            "end/datetime": view.end,
            "lastmodifieddatetime": view.last_modified,
            "createddatetime": view.event.created,
            "singlevalueextendedproperties": [dict(p) for p in view.event.extended],
            "categories": list(view.prop("categories") or []),
            "organizer/emailaddress/address": view.event.organizer["emailAddress"][
                "address"
            ],
        }
        return table.get(key)

    return resolve


def _filtered(ctx: Context, views: list[EventView]) -> list[EventView]:
    if ctx.query.filter:
        predicate = parse_filter(ctx.query.filter)
        views = [v for v in views if predicate(_resolver(v))]
    order = (ctx.query.orderby or "").strip().casefold()
    if order:
        field, _, direction = order.partition(" ")
        keys: dict[str, Any] = {
            "start/datetime": lambda v: v.start,
            "end/datetime": lambda v: v.end,
            "lastmodifieddatetime": lambda v: v.last_modified,
            "createddatetime": lambda v: v.event.created,
            "subject": lambda v: (v.prop("subject") or "").casefold(),
        }
        if field not in keys:
            raise GraphError(
                400, "BadRequest", f"The $orderby property '{field}' is not supported."
            )
        views = sorted(views, key=keys[field], reverse=direction.strip() == "desc")
    return views


def _page(
    ctx: Context, views: list[EventView], options: RenderOptions, context: str
) -> Response:
    query = ctx.query
    size = query.top or ctx.max_page_size() or DEFAULT_PAGE_SIZE
    start = query.skip
    chunk = views[start : start + size]
    short = ctx.short_page()
    body: dict[str, Any] = {"@odata.context": ctx.context_url(context), "value": []}
    if short:
        body["@odata.nextLink"] = next_link(ctx.request_url(), ctx.raw_params, start)
        return ctx.json(body)
    body["value"] = [_render(ctx, v, options) for v in chunk]
    if start + size < len(views):
        body["@odata.nextLink"] = next_link(
            ctx.request_url(), ctx.raw_params, start + size
        )
    return ctx.json(body)


def _window(ctx: Context) -> tuple[datetime, datetime]:
    params = ctx.raw_params
    start = params.get("startDateTime") or params.get("startdatetime")
    end = params.get("endDateTime") or params.get("enddatetime")
    if not start or not end:
        raise GraphError(400, "ErrorInvalidParameter", WINDOW_REQUIRED)
    return parse_instant(start, "startDateTime"), parse_instant(end, "endDateTime")


# -- /me ----------------------------------------------------------------------------------


async def get_me(ctx: Context) -> Response:
    """``GET /me``: the signed-in user's default properties."""
    with ctx.state.lock:
        data = ctx.store.user_json(ctx.email)
    select = ctx.query.select
    if select is not None:
        data = {k: v for k, v in data.items() if k in select or k == "id"}
    return ctx.json({"@odata.context": ctx.context_url("users/$entity"), **data})


# -- calendars --------------------------------------------------------------------------------


async def list_calendars(ctx: Context) -> Response:
    """``GET /me/calendars``."""
    with ctx.state.lock:
        cals = _calendars(ctx)
        cals.ensure_default()
        items = [cals.render_calendar(c) for c in cals.data.calendars.values()]
    return ctx.json(
        {
            "@odata.context": ctx.context_url(f"{ctx.user_segment()}/calendars"),
            "value": items,
        }
    )


async def get_calendar(ctx: Context) -> Response:
    """``GET /me/calendar`` or ``/me/calendars/{id}``."""
    with ctx.state.lock:
        cals = _calendars(ctx)
        data = cals.render_calendar(cals.calendar(ctx.params.get("calendar-id")))
    return ctx.json(
        {
            "@odata.context": ctx.context_url(
                f"{ctx.user_segment()}/calendars/$entity"
            ),
            **data,
        }
    )


async def create_calendar(ctx: Context) -> Response:
    """``POST /me/calendars`` with a ``name``."""
    body = await read_body(ctx)
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise GraphError(
            400,
            "ErrorInvalidRequest",
            "Your request can't be completed. The calendar needs a name.",
        )
    with ctx.state.lock:
        cals = _calendars(ctx)
        data = cals.render_calendar(cals.create_calendar(name.strip()))
        ctx.state.mark_dirty()
    return ctx.json(
        {
            "@odata.context": ctx.context_url(
                f"{ctx.user_segment()}/calendars/$entity"
            ),
            **data,
        },
        status=201,
    )


# -- events -------------------------------------------------------------------------------------


def _calendar_id(ctx: Context) -> str | None:
    return ctx.params.get("calendar-id")


async def list_events(ctx: Context) -> Response:
    """``GET /me/events`` (and per calendar): single instances and series masters."""
    with ctx.state.lock:
        cals = _calendars(ctx)
        cal_id = _calendar_id(ctx)
        if cal_id is None and "calendar" in ctx.route.template.split("/"):
            cal_id = cals.ensure_default().id
        options = _options(ctx)
        views = _filtered(ctx, cals.masters_and_singles(cal_id))
        return _page(ctx, views, options, f"{ctx.user_segment()}/events")


async def get_event(ctx: Context) -> Response:
    """``GET /me/events/{id}`` (single, master, occurrence or exception)."""
    with ctx.state.lock:
        view = _calendars(ctx).view(ctx.params["event-id"])
        options = _options(ctx)
        data = _render(ctx, view, options)
    return ctx.json(
        {
            "@odata.context": ctx.context_url(f"{ctx.user_segment()}/events/$entity"),
            **data,
        }
    )


async def create_event(ctx: Context) -> Response:
    """``POST /me/events`` (or into a calendar): 201 with the event."""
    body = await read_body(ctx)
    faults = ctx.draw_graph_faults({GraphFaultKind.CONCURRENT_ITEM_SAVE})
    with ctx.state.lock:
        cals = _calendars(ctx)
        cal_id = _calendar_id(ctx)
        if faults and not faults[0].after_write:
            raise _concurrent_item_save()
        view = cals.create(body, calendar_id=cal_id, now=ctx.now())
        ctx.state.mark_dirty()
        notify(ctx, "events", view.event.calendar_id, "created", view.id, view.etag)
        if faults:
            # "503 ConcurrentItemSave" although the event was created (checklist 15)
            raise _concurrent_item_save()
        data = _render(ctx, view, _options(ctx, write_zone=view.event.start_zone))
    return ctx.json(
        {
            "@odata.context": ctx.context_url(f"{ctx.user_segment()}/events/$entity"),
            **data,
        },
        status=201,
    )


def _concurrent_item_save() -> GraphError:
    return GraphError(
        503,
        "ConcurrentItemSave",
        "Conflicts occurred during saving the item. Please try again.",
    )


async def update_event(ctx: Context) -> Response:
    """``PATCH /me/events/{id}``: 200 with the event; If-Match -> 412 when stale."""
    body = await read_body(ctx)
    with ctx.state.lock:
        cals = _calendars(ctx)
        view = cals.update(
            ctx.params["event-id"],
            body,
            if_match=ctx.request.headers.get("if-match"),
            now=ctx.now(),
        )
        ctx.state.mark_dirty()
        notify(ctx, "events", view.event.calendar_id, "updated", view.id, view.etag)
        zone = view.exception.start_zone if view.exception else view.event.start_zone
        data = _render(ctx, view, _options(ctx, write_zone=zone))
    return ctx.json(
        {
            "@odata.context": ctx.context_url(f"{ctx.user_segment()}/events/$entity"),
            **data,
        }
    )


async def delete_event(ctx: Context) -> Response:
    """``DELETE /me/events/{id}``: 204; an occurrence is cancelled and its master updated."""
    with ctx.state.lock:
        cals = _calendars(ctx)
        view = cals.view(ctx.params["event-id"])
        calendar_id = view.event.calendar_id
        notified, change = cals.delete(
            ctx.params["event-id"],
            if_match=ctx.request.headers.get("if-match"),
            now=ctx.now(),
        )
        ctx.state.mark_dirty()
        master = cals.data.events.get(notified)
        etag = f'W/"{master.change_key}"' if master else view.etag
        notify(ctx, "events", calendar_id, change, notified, etag)
    return ctx.empty(204)


async def calendar_view(ctx: Context) -> Response:
    """``GET /me/calendarView``: occurrences, exceptions and singles in the window."""
    start, end = _window(ctx)
    with ctx.state.lock:
        cals = _calendars(ctx)
        options = _options(ctx)
        views = _filtered(ctx, cals.calendar_view(_calendar_id(ctx), start, end))
        return _page(ctx, views, options, f"{ctx.user_segment()}/calendarView")


async def instances(ctx: Context) -> Response:
    """``GET /me/events/{id}/instances``: occurrences and exceptions (cancelled omitted)."""
    start, end = _window(ctx)
    with ctx.state.lock:
        cals = _calendars(ctx)
        view = cals.view(ctx.params["event-id"])
        views = (
            cals.instances(view.event, start, end)
            if view.kind == "seriesMaster"
            else []
        )
        options = _options(ctx)
        views = _filtered(ctx, views)
        return _page(
            ctx, views, options, f"{ctx.user_segment()}/events('{view.id}')/instances"
        )


# -- calendarView delta ----------------------------------------------------------------------


def _deltas(ctx: Context) -> Deltas:
    settings = ctx.store.settings
    return Deltas(
        ctx.store.data.delta,
        max_age_s=settings.delta_token_max_age_s,
        per_mailbox=settings.delta_tokens_per_mailbox,
    )


async def calendar_view_delta(ctx: Context) -> Response:
    """``GET /me/calendarView/delta``: pages of changes with nextLink/deltaLink; 410 when expired."""
    params = ctx.raw_params
    for name in _DELTA_UNSUPPORTED:
        if name in params:
            raise GraphError(
                400,
                "ErrorInvalidUrlQuery",
                "The following parameters are not supported with change tracking over the "
                "'CalendarView' resource: '$orderby, $search, $select, $expand, $filter'.",
            )
    now = ctx.now()
    with ctx.state.lock:
        deltas = _deltas(ctx)
        cals = _calendars(ctx)
        # /me/calendarView/delta covers every calendar; /me/calendar/... the
        # default one; /me/calendars/{id}/... that one. Links keep the path.
        cal_id = _calendar_id(ctx)
        link = f"{ctx.graph_base}/me/calendarView/delta"
        if cal_id is not None:
            cals.calendar(cal_id)  # 404 for an unknown calendar
            link = (
                f"{ctx.graph_base}/me/calendars/{quote(cal_id, safe='')}"
                "/calendarView/delta"
            )
        elif "calendar" in ctx.route.template.split("/"):
            cal_id = cals.ensure_default().id
            link = f"{ctx.graph_base}/me/calendar/calendarView/delta"
        skiptoken = params.get("$skiptoken")
        deltatoken = params.get("$deltatoken")
        if skiptoken:
            rnd, index = deltas.page(skiptoken, "calendarView")
        else:
            previous = None
            if deltatoken:
                try:
                    previous = deltas.token(deltatoken, "calendarView", now)
                except GraphError as exc:
                    # "a Location header containing a request URL with an empty
                    # $deltaToken (same as the initial query)"
                    initial = token_params(deltatoken) or {}
                    initial_window: list[tuple[str, str]] = [
                        (k, initial[k])
                        for k in ("startDateTime", "endDateTime")
                        if k in initial
                    ]
                    query = urlencode(initial_window)
                    raise sync_state_not_found(
                        f"{link}?" + (f"{query}&" if query else "") + "$deltatoken="
                    ) from exc
                window = previous.params
            else:
                window = {
                    "startDateTime": params.get("startDateTime", ""),
                    "endDateTime": params.get("endDateTime", ""),
                }
                if not window["startDateTime"] or not window["endDateTime"]:
                    raise GraphError(400, "ErrorInvalidParameter", WINDOW_REQUIRED)
            start = parse_instant(window["startDateTime"], "startDateTime")
            end = parse_instant(window["endDateTime"], "endDateTime")
            views = cals.calendar_view(cal_id, start, end)
            current = [
                CurrentItem(v.id, v.change_key, v.series_master_id or v.id)
                for v in views
            ]
            groups = {c.group for c in current}
            out_of_window: list[str] = []
            silent: set[str] = set()
            if previous is not None:
                out_of_window = [
                    c.event_id
                    for c in cals.changes_since(previous.seq)
                    if c.event_id not in groups
                    and _in_calendar(cals, c.event_id, cal_id)
                ]
                silent = _cancelled_occurrences(cals, previous.snapshot)
            page_size = ctx.max_page_size() or DEFAULT_PAGE_SIZE
            rnd = deltas.start_round(
                email=ctx.email,
                kind="calendarView",
                params=dict(window),
                current=current,
                previous=previous,
                out_of_window=out_of_window,
                silent_removals=silent,
                next_seq=cals.data.seq,
                page_size=page_size,
                now=now,
            )
            index = 0
        ctx.applied.append("odata.track-changes")
        options = RenderOptions(
            zone=ctx.prefer_zone(), prefer_text_body=ctx.prefer_text_body()
        )
        values: list[dict[str, Any]] = []
        for entry in rnd.pages[index]:
            if entry.removed:
                values.append(
                    {
                        "@odata.type": "#microsoft.graph.event",
                        "id": entry.id,
                        "@removed": {"reason": "deleted"},
                    }
                )
                continue
            try:
                view = cals.view(entry.id)
            except GraphError:
                continue
            values.append(_render(ctx, view, options))
        body: dict[str, Any] = {
            "@odata.context": ctx.context_url("Collection(event)"),
            "value": values,
        }
        if index + 1 < len(rnd.pages):
            body["@odata.nextLink"] = (
                f"{link}?$skiptoken={Deltas.skiptoken(rnd, index + 1)}"
            )
        else:
            token = deltas.finish(rnd, now)
            body["@odata.deltaLink"] = f"{link}?$deltatoken={token.token}"
        ctx.state.mark_dirty()
    return ctx.json(body)


def _in_calendar(cals: Calendars, event_id: str, calendar_id: str | None) -> bool:
    """Whether a changed event concerns a feed of ``calendar_id`` (None: every
    calendar). A deleted event's calendar is unknown: it is reported, as Graph
    reports ``@removed`` ids a client may never have seen."""
    if calendar_id is None:
        return True
    event = cals.data.events.get(event_id)
    return event is None or event.calendar_id == calendar_id


def _cancelled_occurrences(cals: Calendars, snapshot: dict[str, str]) -> set[str]:
    """Occurrence ids of live series that were cancelled (reported silently)."""
    silent: set[str] = set()
    for item_id in snapshot:
        split = _ids.split_occurrence_id(item_id)
        if split is None:
            continue
        master = cals.data.events.get(split[0])
        if master is not None and format_utc(split[1]) in master.cancelled:
            silent.add(item_id)
    return silent


_ME = "/me"
ROUTES: list[GraphRoute] = [
    GraphRoute("GET", _ME, get_me, "graph.me.get", USER_READ),
    GraphRoute(
        "GET", "/me/calendars", list_calendars, "graph.calendars.list", CAL_READ
    ),
    GraphRoute(
        "POST", "/me/calendars", create_calendar, "graph.calendars.create", CAL_WRITE
    ),
    GraphRoute("GET", "/me/calendar", get_calendar, "graph.calendars.get", CAL_READ),
    GraphRoute(
        "GET",
        "/me/calendars/{calendar-id}",
        get_calendar,
        "graph.calendars.get",
        CAL_READ,
    ),
    GraphRoute("GET", "/me/events", list_events, "graph.events.list", CAL_READ),
    GraphRoute("POST", "/me/events", create_event, "graph.events.create", CAL_WRITE),
    GraphRoute(
        "GET", "/me/calendar/events", list_events, "graph.events.list", CAL_READ
    ),
    GraphRoute(
        "POST", "/me/calendar/events", create_event, "graph.events.create", CAL_WRITE
    ),
    GraphRoute(
        "GET",
        "/me/calendars/{calendar-id}/events",
        list_events,
        "graph.events.list",
        CAL_READ,
    ),
    GraphRoute(
        "POST",
        "/me/calendars/{calendar-id}/events",
        create_event,
        "graph.events.create",
        CAL_WRITE,
    ),
    GraphRoute("GET", "/me/events/{event-id}", get_event, "graph.events.get", CAL_READ),
    GraphRoute(
        "PATCH", "/me/events/{event-id}", update_event, "graph.events.update", CAL_WRITE
    ),
    GraphRoute(
        "DELETE",
        "/me/events/{event-id}",
        delete_event,
        "graph.events.delete",
        CAL_WRITE,
    ),
    GraphRoute(
        "GET", "/me/calendar/events/{event-id}", get_event, "graph.events.get", CAL_READ
    ),
    GraphRoute(
        "PATCH",
        "/me/calendar/events/{event-id}",
        update_event,
        "graph.events.update",
        CAL_WRITE,
    ),
    GraphRoute(
        "DELETE",
        "/me/calendar/events/{event-id}",
        delete_event,
        "graph.events.delete",
        CAL_WRITE,
    ),
    GraphRoute(
        "GET",
        "/me/calendars/{calendar-id}/events/{event-id}",
        get_event,
        "graph.events.get",
        CAL_READ,
    ),
    GraphRoute(
        "PATCH",
        "/me/calendars/{calendar-id}/events/{event-id}",
        update_event,
        "graph.events.update",
        CAL_WRITE,
    ),
    GraphRoute(
        "DELETE",
        "/me/calendars/{calendar-id}/events/{event-id}",
        delete_event,
        "graph.events.delete",
        CAL_WRITE,
    ),
    GraphRoute(
        "GET",
        "/me/events/{event-id}/instances",
        instances,
        "graph.events.instances",
        CAL_READ,
    ),
    GraphRoute(
        "GET", "/me/calendarView", calendar_view, "graph.calendarView.list", CAL_READ
    ),
    GraphRoute(
        "GET",
        "/me/calendar/calendarView",
        calendar_view,
        "graph.calendarView.list",
        CAL_READ,
    ),
    GraphRoute(
        "GET",
        "/me/calendars/{calendar-id}/calendarView",
        calendar_view,
        "graph.calendarView.list",
        CAL_READ,
    ),
    GraphRoute(
        "GET",
        "/me/calendarView/delta",
        calendar_view_delta,
        "graph.calendarView.delta",
        CAL_READ,
    ),
    GraphRoute(
        "GET",
        "/me/calendar/calendarView/delta",
        calendar_view_delta,
        "graph.calendarView.delta",
        CAL_READ,
    ),
    GraphRoute(
        "GET",
        "/me/calendars/{calendar-id}/calendarView/delta",
        calendar_view_delta,
        "graph.calendarView.delta",
        CAL_READ,
    ),
]
