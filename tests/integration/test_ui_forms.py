"""The UI's forms over HTTP (httpx + ASGI transport, SQLite migrated per test).

Covers the security rules of the server-rendered UI: sign-in (wrong password
sets no session; no open redirect), CSRF on every POST (rejected with 403 and
nothing written: the rows are counted in the database), sign-in redirects,
tenant isolation (another organization's appointment is 404 for both the edit
page and the delete action), the session cookie's flags, sign-out, and the form
rules (invalid input is shown again with a message and writes nothing; editing
keeps attendees and the recurrence rule the form does not show).

People: ``ann`` and ``carl`` are members of Acme, ``bob`` of Globex, ``dana``
admin of both.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from crmflow.bootstrap import Services, start_services
from crmflow.config import load_settings
from crmflow.domain import crm
from crmflow.domain.appointments import timed_span
from crmflow.domain.tenancy import Role
from crmflow.store import models
from crmflow.store.crypto import generate_key_entry
from crmflow.store.db import Database
from crmflow.store.identity import (
    enter_organization,
    provision_organization,
    provision_user,
)
from crmflow.store.migrate import upgrade
from crmflow.store.repositories import AppointmentRepository
from crmflow.web.app import create_app

PASSWORD = "correct horse battery"
COOKIE = "crmflow_session"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass(frozen=True)
class Seeded:
    """The template database: migrated, with the organizations and people."""

    path: Path
    acme: uuid.UUID
    globex: uuid.UUID
    users: dict[str, uuid.UUID]


@dataclass(frozen=True)
class Site:
    app: FastAPI
    services: Services
    acme: uuid.UUID
    globex: uuid.UUID
    users: dict[str, uuid.UUID]


def _url(path: Path) -> str:
    return f"sqlite:///{path.as_posix()}"


async def _seed(url: str) -> Seeded:
    admin = Database(url)
    try:
        acme = await provision_organization(admin, "Acme")
        globex = await provision_organization(admin, "Globex")
        users = {
            "ann": await provision_user(
                admin, "ann@acme.test", PASSWORD, organization_id=acme
            ),
            "carl": await provision_user(
                admin, "carl@acme.test", PASSWORD, organization_id=acme
            ),
            "bob": await provision_user(
                admin, "bob@globex.test", PASSWORD, organization_id=globex
            ),
            "dana": await provision_user(
                admin,
                "dana@acme.test",
                PASSWORD,
                organization_id=acme,
                role=Role.ADMIN,
            ),
        }
        async with admin.admin() as session:
            session.add(
                models.UserOrganization(
                    user_id=users["dana"], organization_id=globex, role="admin"
                )
            )
    finally:
        await admin.dispose()
    return Seeded(Path(make_url(url).database or ""), acme, globex, users)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    """Migrated and seeded once per module (argon2 hashing is slow on purpose).

    Seeding runs on its own loop in a worker thread, away from pytest-asyncio's.
    """
    url = _url(tmp_path_factory.mktemp("ui-template") / "template.db")
    upgrade(url)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, _seed(url)).result()


@pytest.fixture
async def site(seeded: Seeded, tmp_path: Path) -> AsyncIterator[Site]:
    path = tmp_path / "crmflow.db"
    # The template's connections are closed, so its WAL is checkpointed into
    # the main file and a plain copy is a complete database.
    shutil.copyfile(seeded.path, path)
    settings = load_settings(
        database_url=_url(path),
        encryption_keys=generate_key_entry(),
        session_secret="x" * 40,
        data_dir=tmp_path,
    )
    services = await start_services(settings)
    try:
        yield Site(
            create_app(settings, services),
            services,
            seeded.acme,
            seeded.globex,
            seeded.users,
        )
    finally:
        await services.close()


@pytest.fixture
async def client(site: Site) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(site) as c:
        yield c


def _client(site: Site) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=site.app), base_url="http://testserver"
    )


def csrf_of(response: httpx.Response) -> str:
    found = _CSRF.search(response.text)
    assert found, "the page has no CSRF token"
    return found.group(1)


def session_of(client: httpx.AsyncClient) -> dict[str, Any]:
    """The (signed, not encrypted) session cookie's payload; {} without one."""
    value = client.cookies.get(COOKIE)
    if not value or value == "null":
        return {}
    payload: dict[str, Any] = json.loads(base64.b64decode(value.split(".")[0]))
    return payload


async def sign_in(client: httpx.AsyncClient, email: str) -> str:
    """Sign in through the form; returns the new session's CSRF token."""
    token = csrf_of(await client.get("/login"))
    response = await client.post(
        "/login", data={"csrf_token": token, "email": email, "password": PASSWORD}
    )
    assert response.status_code == 303, response.text
    return csrf_of(await client.get("/appointments"))


def appointment_form(token: str, **fields: str) -> dict[str, str]:
    start = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=3)
    return {
        "csrf_token": token,
        "title": "Board meeting",
        "start": f"{start.isoformat()}T09:00",
        "end": f"{start.isoformat()}T10:00",
        "timezone": "Europe/Berlin",
        "location": "Room 1",
        "description": "",
        "status": "confirmed",
        **fields,
    }


async def count(site: Site, model: type[models.Base]) -> int:
    async with site.services.db.admin() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def stored_appointments(site: Site) -> list[models.Appointment]:
    async with site.services.db.admin() as session:
        return list(await session.scalars(select(models.Appointment)))


async def create_as(site: Site, user: str, org: uuid.UUID) -> crm.Appointment:
    """An appointment created directly through the repository."""
    ctx = await enter_organization(site.services.db, site.users[user], org)
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=2)
    async with site.services.db.tenant(ctx) as session:
        return await AppointmentRepository(session).create(
            crm.AppointmentDraft(
                title=f"{user}'s meeting",
                span=timed_span(start, start + dt.timedelta(hours=1), "UTC"),
                attendees=(crm.Attendee("guest@example.com", "Guest"),),
                recurrence_rule="FREQ=WEEKLY;COUNT=4",
            )
        )


# ----------------------------------------------------------------------- sign-in


async def test_wrong_password_shows_an_error_and_sets_no_session(
    site: Site, client: httpx.AsyncClient
) -> None:
    token = csrf_of(await client.get("/login"))
    for email, password in [
        ("ann@acme.test", "not the password"),
        ("nobody@acme.test", PASSWORD),
    ]:
        response = await client.post(
            "/login",
            data={"csrf_token": token, "email": email, "password": password},
        )
        assert response.status_code == 422
        assert "The email address or the password is not correct" in response.text
        assert f'value="{email}"' in response.text  # the address stays filled in
        assert "set-cookie" not in response.headers
        assert "user_id" not in session_of(client)
    response = await client.get("/appointments")
    assert response.status_code == 303
    assert response.headers["location"] == "/login"


async def test_sign_in_never_redirects_off_site(
    site: Site, client: httpx.AsyncClient
) -> None:
    token = csrf_of(await client.get("/login"))
    response = await client.post(
        "/login",
        data={
            "csrf_token": token,
            "email": "ann@acme.test",
            "password": PASSWORD,
            "next": "//evil.example/phish",
        },
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/appointments"


async def test_sign_in_replaces_the_csrf_token(
    site: Site, client: httpx.AsyncClient
) -> None:
    before = csrf_of(await client.get("/login"))
    after = await sign_in(client, "ann@acme.test")
    assert after != before
    assert session_of(client)["user_id"] == str(site.users["ann"])
    assert session_of(client)["org_id"] == str(site.acme)


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/appointments", "/login"),
        ("/appointments?show=past", "/login?next=%2Fappointments%3Fshow%3Dpast"),
        ("/email", "/login?next=%2Femail"),
        ("/settings", "/login?next=%2Fsettings"),
        (f"/appointments/{uuid.uuid4()}/edit", None),
        ("/", "/appointments"),
    ],
)
async def test_pages_redirect_to_sign_in_when_signed_out(
    client: httpx.AsyncClient, path: str, location: str | None
) -> None:
    response = await client.get(path)
    assert response.status_code == 303
    if location is None:
        assert response.headers["location"].startswith("/login?next=%2Fappointments")
    else:
        assert response.headers["location"] == location


async def test_session_cookie_is_httponly_and_samesite_lax(
    client: httpx.AsyncClient,
) -> None:
    token = csrf_of(await client.get("/login"))
    response = await client.post(
        "/login",
        data={"csrf_token": token, "email": "ann@acme.test", "password": PASSWORD},
    )
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert "httponly" in flags
    assert "samesite=lax" in flags
    assert "path=/" in flags


async def test_logout_clears_the_session(client: httpx.AsyncClient) -> None:
    token = await sign_in(client, "ann@acme.test")
    assert "user_id" in session_of(client)
    response = await client.post("/logout", data={"csrf_token": token})
    assert response.status_code == 303
    assert response.headers["location"] == "/login?signed_out=1"
    assert response.headers["set-cookie"].startswith(f"{COOKIE}=null;")
    assert "01 jan 1970" in response.headers["set-cookie"].lower()
    assert session_of(client) == {}
    assert (await client.get("/appointments")).headers["location"] == "/login"
    assert "You are signed out" in (await client.get("/login?signed_out=1")).text


# -------------------------------------------------------------------------- CSRF


@pytest.mark.parametrize("sent", [None, "", "forged-token"])
async def test_forms_without_the_csrf_token_are_rejected_and_write_nothing(
    site: Site, client: httpx.AsyncClient, sent: str | None
) -> None:
    token = await sign_in(client, "ann@acme.test")
    existing = await create_as(site, "ann", site.acme)

    def form(**fields: str) -> dict[str, str]:
        data = {**fields}
        if sent is None:
            data.pop("csrf_token", None)
        else:
            data["csrf_token"] = sent
        return data

    attempts = [
        ("/appointments", appointment_form(token)),
        (f"/appointments/{existing.id}", appointment_form(token, title="Hijacked")),
        (f"/appointments/{existing.id}/delete", {"csrf_token": token}),
        ("/settings/tokens", {"csrf_token": token, "name": "x", "expires_in_days": ""}),
        (
            "/settings/password",
            {
                "csrf_token": token,
                "current_password": PASSWORD,
                "new_password": "another password",
                "confirm_password": "another password",
            },
        ),
        ("/logout", {"csrf_token": token}),
    ]
    for path, data in attempts:
        response = await client.post(path, data=form(**data))
        assert response.status_code == 403, path
        assert response.headers["content-type"].startswith("text/html")
        assert "nothing was saved" in response.text

    [row] = await stored_appointments(site)
    assert (row.title, row.version) == (existing.title, existing.version)
    assert await count(site, models.ApiToken) == 0
    assert "user_id" in session_of(client)  # the forged logout did nothing
    # The password is unchanged: signing in with it still works.
    async with _client(site) as other:
        await sign_in(other, "ann@acme.test")


async def test_sign_in_form_needs_the_csrf_token(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/login", data={"email": "ann@acme.test", "password": PASSWORD}
    )
    assert response.status_code == 403
    assert "user_id" not in session_of(client)


# ------------------------------------------------------------------ appointments


async def test_create_shows_the_appointment_in_the_list(
    site: Site, client: httpx.AsyncClient
) -> None:
    token = await sign_in(client, "ann@acme.test")
    response = await client.post(
        "/appointments", data=appointment_form(token, timezone="Asia/Tokyo")
    )
    assert response.status_code == 303
    [row] = await stored_appointments(site)
    assert row.timezone == "Asia/Tokyo"
    assert row.start_at.astimezone(dt.UTC).hour == 0  # 09:00 in Tokyo is 00:00 UTC
    page = await client.get("/appointments")
    assert "Appointment “Board meeting” created." in page.text
    assert "09:00 – 10:00" in page.text
    assert "Asia/Tokyo" in page.text


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"title": "  "}, "title", "Enter a title"),
        ({"end": ""}, "end", "Enter the end date and time"),
        ({"start": "tomorrow at nine"}, "start", "Enter the start as a date and time"),
        ({"start": "0001-01-01T00:00"}, "start", "between the years 1900 and 2999"),
        ({"timezone": "Mars/Olympus"}, "timezone", "is not a time zone we know"),
        ({"status": "maybe"}, "status", "Choose Confirmed, Tentative or Cancelled"),
        ({"title": "x" * 501}, "title", "shorten it to 500"),
        (
            {"start": "2026-03-29T02:30", "end": "2026-03-29T04:00"},
            "start",
            "does not exist in Europe/Berlin",
        ),
        (
            {"all_day": "on", "start_date": "2026-05-03", "last_date": "2026-05-01"},
            "last_date",
            "The last day is before the first day",
        ),
    ],
)
async def test_invalid_input_is_shown_again_and_writes_nothing(
    site: Site,
    client: httpx.AsyncClient,
    fields: dict[str, str],
    field: str,
    message: str,
) -> None:
    token = await sign_in(client, "ann@acme.test")
    sent = appointment_form(token, location="Room 42, north wing", **fields)
    response = await client.post("/appointments", data=sent)
    assert response.status_code == 422
    assert f'<p class="field-error" id="{field}-error">' in response.text
    assert message in response.text.replace("&#39;", "'")
    # What the user typed is still there.
    assert 'value="Room 42, north wing"' in response.text
    assert await count(site, models.Appointment) == 0


async def test_end_before_start_keeps_every_value(
    site: Site, client: httpx.AsyncClient
) -> None:
    token = await sign_in(client, "ann@acme.test")
    sent = appointment_form(
        token,
        title="Review <script>",
        start="2026-06-01T10:00",
        end="2026-06-01T09:00",
        timezone="America/Chicago",
        description="Bring the numbers",
        status="tentative",
    )
    response = await client.post("/appointments", data=sent)
    assert response.status_code == 422
    html = response.text
    assert "The end must be after the start" in html
    assert 'value="Review &lt;script&gt;"' in html  # kept, and escaped
    assert 'value="2026-06-01T10:00"' in html
    assert '<option value="America/Chicago" selected>' in html
    assert '<option value="tentative" selected>' in html
    assert ">Bring the numbers</textarea>" in html
    assert await count(site, models.Appointment) == 0


async def test_edit_keeps_attendees_and_recurrence(
    site: Site, client: httpx.AsyncClient
) -> None:
    existing = await create_as(site, "ann", site.acme)
    token = await sign_in(client, "ann@acme.test")
    page = await client.get(f"/appointments/{existing.id}/edit")
    assert page.status_code == 200
    assert f'value="{existing.title}"' in page.text.replace("&#39;", "'")
    response = await client.post(
        f"/appointments/{existing.id}",
        data=appointment_form(
            token, title="Renamed", status="cancelled", version=str(existing.version)
        ),
    )
    assert response.status_code == 303
    [row] = await stored_appointments(site)
    assert row.title == "Renamed"
    assert row.status == "cancelled"
    assert row.recurrence_rule == "FREQ=WEEKLY;COUNT=4"
    assert [a["email"] for a in row.attendees] == ["guest@example.com"]


async def test_stale_edit_is_refused_and_keeps_the_input(
    site: Site, client: httpx.AsyncClient
) -> None:
    existing = await create_as(site, "ann", site.acme)
    token = await sign_in(client, "ann@acme.test")
    response = await client.post(
        f"/appointments/{existing.id}",
        data=appointment_form(
            token, title="My version", version=str(existing.version + 5)
        ),
    )
    assert response.status_code == 422
    assert "Someone else changed this appointment" in response.text
    assert 'value="My version"' in response.text
    [row] = await stored_appointments(site)
    assert row.title == existing.title


async def test_delete_removes_the_appointment(
    site: Site, client: httpx.AsyncClient
) -> None:
    existing = await create_as(site, "ann", site.acme)
    token = await sign_in(client, "ann@acme.test")
    response = await client.post(
        f"/appointments/{existing.id}/delete",
        data={"csrf_token": token, "version": str(existing.version)},
    )
    assert response.status_code == 303
    assert await count(site, models.Appointment) == 0
    assert "deleted" in (await client.get("/appointments")).text


async def test_another_organization_gets_404_for_edit_and_delete(
    site: Site, client: httpx.AsyncClient
) -> None:
    existing = await create_as(site, "ann", site.acme)
    token = await sign_in(client, "bob@globex.test")

    edit = await client.get(f"/appointments/{existing.id}/edit")
    assert edit.status_code == 404
    assert edit.headers["content-type"].startswith("text/html")
    assert "Appointment not found." in edit.text
    delete = await client.post(
        f"/appointments/{existing.id}/delete", data={"csrf_token": token}
    )
    assert delete.status_code == 404
    update = await client.post(
        f"/appointments/{existing.id}", data=appointment_form(token, title="Mine now")
    )
    assert update.status_code == 404
    assert existing.title not in (await client.get("/appointments")).text

    [row] = await stored_appointments(site)
    assert (row.title, row.version) == (existing.title, existing.version)


async def test_a_member_cannot_change_another_members_appointment(
    site: Site, client: httpx.AsyncClient
) -> None:
    existing = await create_as(site, "ann", site.acme)
    token = await sign_in(client, "carl@acme.test")
    listing = await client.get("/appointments")
    assert existing.title.replace("'", "&#39;") in listing.text  # visible ...
    assert f"/appointments/{existing.id}/edit" not in listing.text  # ... read-only
    assert (await client.get(f"/appointments/{existing.id}/edit")).status_code == 403
    response = await client.post(
        f"/appointments/{existing.id}/delete", data={"csrf_token": token}
    )
    assert response.status_code == 403
    assert await count(site, models.Appointment) == 1


async def test_malformed_ids_are_404_pages(client: httpx.AsyncClient) -> None:
    await sign_in(client, "ann@acme.test")
    response = await client.get("/appointments/not-an-id/edit")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")


async def test_api_errors_stay_json(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/does-not-exist")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}
    page = await client.get("/does-not-exist")
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")


async def test_past_tab_lists_ended_appointments_newest_first(
    site: Site, client: httpx.AsyncClient
) -> None:
    ctx = await enter_organization(site.services.db, site.users["ann"], site.acme)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    async with site.services.db.tenant(ctx) as session:
        repo = AppointmentRepository(session)
        for title, days in [("Older", -9), ("Newer", -2), ("Coming", 2)]:
            start = now + dt.timedelta(days=days)
            await repo.create(
                crm.AppointmentDraft(
                    title, timed_span(start, start + dt.timedelta(hours=1), "UTC")
                )
            )
    await sign_in(client, "ann@acme.test")
    upcoming = (await client.get("/appointments")).text
    assert "Coming" in upcoming
    assert "Older" not in upcoming
    past = (await client.get("/appointments?show=past")).text
    assert "Coming" not in past
    assert past.index("Newer") < past.index("Older")


async def test_unexpected_errors_get_an_html_page_or_json(site: Site) -> None:
    async def boom() -> None:
        raise RuntimeError("boom")

    site.app.add_api_route("/boom", boom)
    site.app.add_api_route("/api/boom", boom)
    transport = httpx.ASGITransport(app=site.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver"
    ) as c:
        page = await c.get("/boom")
        assert page.status_code == 500
        assert "Something went wrong" in page.text
        assert "boom" not in page.text  # no internals on the page
        api = await c.get("/api/boom")
        assert api.status_code == 500
        assert api.json()["error"] == "InternalError"


# ---------------------------------------------------------------------- settings


async def test_api_token_is_shown_once_and_can_be_revoked(
    site: Site, client: httpx.AsyncClient
) -> None:
    token = await sign_in(client, "ann@acme.test")
    response = await client.post(
        "/settings/tokens",
        data={"csrf_token": token, "name": "reporting", "expires_in_days": "30"},
    )
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    found = re.search(r'id="new-token" value="(crm_[^"]+)"', response.text)
    assert found
    secret = found.group(1)
    assert "set-cookie" not in response.headers  # never through the cookie
    assert secret not in (await client.get("/settings")).text

    bearer = {"Authorization": f"Bearer {secret}"}
    me = await client.get("/api/me", headers=bearer)
    assert me.status_code == 200
    assert me.json()["email"] == "ann@acme.test"

    [row_id] = re.findall(r"/settings/tokens/([0-9a-f-]{36})/revoke", response.text)
    revoke = await client.post(
        f"/settings/tokens/{row_id}/revoke", data={"csrf_token": token}
    )
    assert revoke.status_code == 303
    assert (await client.get("/api/me", headers=bearer)).status_code == 401


async def test_token_needs_a_name(site: Site, client: httpx.AsyncClient) -> None:
    token = await sign_in(client, "ann@acme.test")
    response = await client.post(
        "/settings/tokens",
        data={"csrf_token": token, "name": " ", "expires_in_days": "30"},
    )
    assert response.status_code == 422
    assert "Name the token" in response.text
    assert await count(site, models.ApiToken) == 0


async def test_password_change(site: Site, client: httpx.AsyncClient) -> None:
    token = await sign_in(client, "ann@acme.test")
    wrong = await client.post(
        "/settings/password",
        data={
            "csrf_token": token,
            "current_password": "not it",
            "new_password": "new password 1",
            "confirm_password": "new password 1",
        },
    )
    assert wrong.status_code == 422
    assert "The current password is not correct." in wrong.text
    mismatch = await client.post(
        "/settings/password",
        data={
            "csrf_token": token,
            "current_password": PASSWORD,
            "new_password": "new password 1",
            "confirm_password": "new password 2",
        },
    )
    assert mismatch.status_code == 422
    assert "The two new passwords differ" in mismatch.text
    ok = await client.post(
        "/settings/password",
        data={
            "csrf_token": token,
            "current_password": PASSWORD,
            "new_password": "new password 1",
            "confirm_password": "new password 1",
        },
    )
    assert ok.status_code == 303
    async with _client(site) as other:
        login = csrf_of(await other.get("/login"))
        old = await other.post(
            "/login",
            data={"csrf_token": login, "email": "ann@acme.test", "password": PASSWORD},
        )
        assert old.status_code == 422
        new = await other.post(
            "/login",
            data={
                "csrf_token": login,
                "email": "ann@acme.test",
                "password": "new password 1",
            },
        )
        assert new.status_code == 303


async def test_settings_show_members_to_admins_only(
    site: Site, client: httpx.AsyncClient
) -> None:
    await sign_in(client, "ann@acme.test")
    assert "carl@acme.test" not in (await client.get("/settings")).text
    async with _client(site) as admin:
        await sign_in(admin, "dana@acme.test")
        page = (await admin.get("/settings")).text
        assert "Members of Acme" in page
        assert "carl@acme.test" in page


async def test_organization_switcher(site: Site, client: httpx.AsyncClient) -> None:
    globex_appointment = await create_as(site, "bob", site.globex)
    token = await sign_in(client, "dana@acme.test")  # Acme comes first by name
    assert globex_appointment.title not in (await client.get("/appointments")).text
    settings = await client.get("/settings")
    assert 'name="organization_id"' in settings.text

    response = await client.post(
        "/settings/organization",
        data={"csrf_token": token, "organization_id": str(site.globex)},
    )
    assert response.status_code == 303
    assert session_of(client)["org_id"] == str(site.globex)
    listing = (await client.get("/appointments")).text
    assert globex_appointment.title.replace("'", "&#39;") in listing

    # Not a member: refused, and the session stays where it was.
    token = csrf_of(await client.get("/settings"))
    # (SQLite: the application database is also the admin database.)
    elsewhere = await provision_organization(site.services.db, "Initech")
    refused = await client.post(
        "/settings/organization",
        data={"csrf_token": token, "organization_id": str(elsewhere)},
    )
    assert refused.status_code == 404
    assert session_of(client)["org_id"] == str(site.globex)


# ------------------------------------------------------------------ sessions


async def test_password_change_ends_other_sessions_but_keeps_this_one(
    site: Site, client: httpx.AsyncClient
) -> None:
    """A copied cookie stops working once the password changes."""
    token = await sign_in(client, "ann@acme.test")
    async with _client(site) as other:
        await sign_in(other, "ann@acme.test")
        changed = await client.post(
            "/settings/password",
            data={
                "csrf_token": token,
                "current_password": PASSWORD,
                "new_password": "a brand new password",
                "confirm_password": "a brand new password",
            },
        )
        assert changed.status_code == 303
        assert (await client.get("/settings")).status_code == 200
        kicked = await other.get("/settings")
        assert kicked.status_code == 303
        assert kicked.headers["location"].startswith("/login")


async def test_sign_out_everywhere(site: Site, client: httpx.AsyncClient) -> None:
    token = await sign_in(client, "ann@acme.test")
    async with _client(site) as other:
        await sign_in(other, "ann@acme.test")
        ended = await client.post("/settings/sessions/end", data={"csrf_token": token})
        assert ended.status_code == 303
        for c in (client, other):
            resp = await c.get("/appointments")
            assert resp.status_code == 303
            assert resp.headers["location"].startswith("/login")


async def test_failed_sign_ins_are_throttled(client: httpx.AsyncClient) -> None:
    token = csrf_of(await client.get("/login"))
    for _ in range(10):
        bad = await client.post(
            "/login",
            data={"csrf_token": token, "email": "carl@acme.test", "password": "wrong"},
        )
        assert bad.status_code == 422
    # even the right password is refused while throttled, and the user is told why
    blocked = await client.post(
        "/login",
        data={"csrf_token": token, "email": "carl@acme.test", "password": PASSWORD},
    )
    assert blocked.status_code == 429
    assert "Too many failed sign-ins" in blocked.text
    assert "user_id" not in session_of(client)


async def test_other_users_cannot_revoke_a_token_or_enter_an_organization(
    site: Site, client: httpx.AsyncClient
) -> None:
    """The remaining UI routes that name an object: token revoke, org switch."""
    token = await sign_in(client, "ann@acme.test")
    created = await client.post(
        "/settings/tokens", data={"csrf_token": token, "name": "ann's"}
    )
    assert created.status_code in (200, 303)
    page = await client.get("/settings")
    [row_id] = re.findall(r"/settings/tokens/([0-9a-f-]{36})/revoke", page.text)
    async with _client(site) as bob:
        bob_token = await sign_in(bob, "bob@globex.test")
        revoke = await bob.post(
            f"/settings/tokens/{row_id}/revoke", data={"csrf_token": bob_token}
        )
        assert revoke.status_code == 404
        switch = await bob.post(
            "/settings/organization",
            data={"csrf_token": bob_token, "organization_id": str(site.acme)},
        )
        assert switch.status_code == 404
        assert session_of(bob)["org_id"] == str(site.globex)
    # ann's token is still listed
    assert row_id in (await client.get("/settings")).text
