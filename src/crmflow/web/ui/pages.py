"""Rendering of the server-side pages: the Jinja2 environment and ``render()``.

Public surface: :func:`render` (a template as an ``HTMLResponse`` with the
security headers every page carries), :func:`render_error` (the HTML error page
``crmflow.web.errors`` uses for non-``/api`` paths) and the display helpers the
templates use as filters (:func:`when`, :func:`instant`).

Autoescaping is on for every template and undefined variables raise, so a typo
in a template fails loudly in the tests instead of rendering an empty string.
Pages load nothing from other origins; the Content-Security-Policy below makes
the browser enforce that (``'self'`` only, no inline scripts or styles).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from crmflow import __version__
from crmflow.domain import crm
from crmflow.domain.appointments import zone

#: sent with every rendered page (static files are served by StaticFiles)
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; "
        "script-src 'self'; connect-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    # Pages are personal (names, tokens shown once): never cache them.
    "Cache-Control": "no-store",
}

#: session key of the messages shown once on the next page (post/redirect/get)
FLASH_KEY = "flash"


def _day(value: dt.date) -> str:
    # Spelled out instead of strftime("%-d"): that flag is glibc-only.
    return f"{value:%a} {value.day} {value:%b %Y}"


def when(appointment: crm.Appointment) -> str:
    """When an appointment happens, in its own time zone, for a person.

    Examples: ``Fri 1 May 2026, 09:30 – 10:30``; ``Fri 1 May 2026 22:00 – Sat 2
    May 2026 01:00``; ``Fri 1 May 2026, all day``; ``Fri 1 May 2026 – Sun 3 May
    2026, all day`` (the stored end date is exclusive; people read the last day).
    """
    span = appointment.span
    if span.all_day:
        first, last = span.start_date, span.end_date - dt.timedelta(days=1)
        if last <= first:
            return f"{_day(first)}, all day"
        return f"{_day(first)} – {_day(last)}, all day"
    tz = zone(span.timezone)
    start, end = span.start_at.astimezone(tz), span.end_at.astimezone(tz)
    if start.date() == end.date():
        return f"{_day(start.date())}, {start:%H:%M} – {end:%H:%M}"
    return f"{_day(start.date())} {start:%H:%M} – {_day(end.date())} {end:%H:%M}"


def occurrence_start(appointment: crm.Appointment, start: dt.date | dt.datetime) -> str:
    """The start of one occurrence of a series, in the series' own time zone:
    ``Mon 7 Dec 2026, 09:30``, or ``Mon 7 Dec 2026`` for an all-day series."""
    if not isinstance(start, dt.datetime):
        return _day(start)
    local = start.astimezone(zone(appointment.span.timezone))
    return f"{_day(local.date())}, {local:%H:%M}"


def first_day(appointment: crm.Appointment) -> dt.date:
    """The day an appointment starts on, in its own time zone."""
    span = appointment.span
    return span.start_at.astimezone(zone(span.timezone)).date()


def instant(value: dt.datetime | None) -> str:
    """An aware instant as ``2026-05-01 09:30 UTC`` (``never`` for None)."""
    if value is None:
        return "never"
    return f"{value.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC"


def next_sync(value: dt.datetime | None) -> str:
    """When the background sync runs next: ``soon`` when it is due, else the
    instant (``2026-05-01 09:30 UTC``)."""
    if value is None or value <= dt.datetime.now(dt.UTC):
        return "soon"
    return instant(value)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("crmflow.web.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["instant"] = instant
    env.filters["next_sync"] = next_sync
    env.filters["first_day"] = first_day
    env.globals["version"] = __version__
    return env


_ENV = _environment()


def take_flashes(request: Request) -> list[dict[str, str]]:
    """The pending one-time messages of this session (and forget them)."""
    if "session" not in request.scope:
        return []
    raw = request.session.pop(FLASH_KEY, None)
    if not isinstance(raw, list):
        return []
    return [m for m in raw if isinstance(m, dict)]


def flash(request: Request, text: str, kind: str = "success") -> None:
    """Show ``text`` once on the next rendered page (``kind``: success / error)."""
    pending = request.session.get(FLASH_KEY)
    messages = pending if isinstance(pending, list) else []
    request.session[FLASH_KEY] = [*messages, {"kind": kind, "text": text}]


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status_code: int = 200,
) -> HTMLResponse:
    """Render ``template`` with ``context`` plus the request and flash messages.

    Every page gets ``request``, ``flashes``, ``viewer`` (None when signed out),
    ``csrf_token`` (None without a session) and ``nav`` (the active section).
    """
    values: dict[str, Any] = {
        "request": request,
        "viewer": None,
        "csrf_token": None,
        "nav": None,
    }
    values.update(context or {})
    values["flashes"] = take_flashes(request)
    html = _ENV.get_template(template).render(values)
    return HTMLResponse(html, status_code=status_code, headers=dict(SECURITY_HEADERS))


def render_error(
    request: Request, status_code: int, title: str, message: str
) -> HTMLResponse:
    """The HTML error page (``message`` says what happened and what to do)."""
    signed_in = "session" in request.scope and "user_id" in request.session
    return render(
        request,
        "error.html",
        {
            "status_code": status_code,
            "title": title,
            "message": message,
            "signed_in": signed_in,
        },
        status_code=status_code,
    )
