"""Shared fixtures.

``backend`` parametrizes a test over SQLite and a real PostgreSQL (started by
``tests/servers/postgres.py``); ``services`` gives the application's services on a
freshly migrated database of that backend, connected as the application role.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher

from crmflow.bootstrap import Services, start_services
from crmflow.config import Settings, load_settings
from crmflow.domain.tenancy import Role, TenantContext
from crmflow.store import passwords
from crmflow.store.crypto import generate_key_entry
from crmflow.store.db import Database
from crmflow.store.identity import provision_organization, provision_user
from crmflow.store.migrate import upgrade
from crmflow.store.repositories import ApiTokenRepository
from crmflow.web.app import create_app

pytest_plugins = [
    "tests.servers.postgres",
    "tests.servers.sandbox",
    "tests.servers.dovecot",
    "tests.servers.radicale",
    "tests.servers.smtp",
]

SESSION_SECRET = "s" * 48


class _RememberingHasher:
    """The production argon2id hasher, remembering the hash of each password
    it was given: the fixtures provision the same users for a thousand tests,
    and each real hash costs about 0.1 s of CPU by design. Hashes stay real
    (verification, logins and wrong passwords work as in production); only
    the salt of one password is the same across tests."""

    def __init__(self, inner: PasswordHasher) -> None:
        self._inner = inner
        self._hashes: dict[str, str] = {}

    def hash(self, password: str) -> str:
        if password not in self._hashes:
            self._hashes[password] = self._inner.hash(password)
        return self._hashes[password]

    def verify(self, stored_hash: str, password: str) -> bool:
        return self._inner.verify(stored_hash, password)


@pytest.fixture(autouse=True, scope="session")
def _remembered_password_hashes() -> Iterator[None]:
    real = passwords._hasher
    passwords._hasher = _RememberingHasher(real)  # type: ignore[assignment]
    yield
    passwords._hasher = real


@dataclass(frozen=True)
class DbUrls:
    backend: str
    #: migration / owner role
    admin_url: str
    #: application role (non-owner on PostgreSQL)
    app_url: str


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database migrated once; tests get copies."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


def sqlite_db_urls(tmp_path: Path, sqlite_template: Path) -> DbUrls:
    """A fresh, migrated SQLite database: for modules that override ``db_urls``
    to run on SQLite only (they say why)."""
    path = tmp_path / "crmflow.db"
    shutil.copyfile(sqlite_template, path)
    url = f"sqlite:///{path}"
    return DbUrls("sqlite", url, url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_urls(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path
) -> DbUrls:
    """A fresh, migrated database of each backend."""
    if request.param == "sqlite":
        return sqlite_db_urls(tmp_path, sqlite_template)
    pg = request.getfixturevalue("pg_database")
    return DbUrls("postgres", pg.admin_url, pg.app_url)


@pytest.fixture
def key_ring() -> str:
    return generate_key_entry("test1")


@pytest.fixture
def settings(db_urls: DbUrls, key_ring: str, tmp_path: Path) -> Settings:
    return load_settings(
        database_url=db_urls.app_url,
        admin_database_url=db_urls.admin_url,
        encryption_keys=key_ring,
        session_secret=SESSION_SECRET,
        data_dir=tmp_path / "data",
    )


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    started = await start_services(settings)
    yield started
    await started.close()


@pytest.fixture
async def admin_db(db_urls: DbUrls) -> AsyncIterator[Database]:
    db = Database(db_urls.admin_url)
    yield db
    await db.dispose()


@dataclass(frozen=True)
class Actor:
    """A provisioned user with an API token."""

    ctx: TenantContext
    email: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass(frozen=True)
class Tenants:
    """Organization A (alice admin, amy member) and B (bob admin)."""

    alice: Actor
    amy: Actor
    bob: Actor


async def make_actor(
    admin: Database, services: Services, org_id: uuid.UUID, email: str, role: Role
) -> Actor:
    user_id = await provision_user(
        admin, email, "password-" + email, organization_id=org_id, role=role
    )
    ctx = TenantContext(user_id, org_id, role)
    async with services.db.tenant(ctx) as session:
        token, _info = await ApiTokenRepository(session).create("tests")
    return Actor(ctx, email, token.reveal())


@pytest.fixture
async def tenants(admin_db: Database, services: Services) -> Tenants:
    org_a = await provision_organization(admin_db, "Org A", "org-a")
    org_b = await provision_organization(admin_db, "Org B", "org-b")
    return Tenants(
        alice=await make_actor(admin_db, services, org_a, "alice@a.test", Role.ADMIN),
        amy=await make_actor(admin_db, services, org_a, "amy@a.test", Role.MEMBER),
        bob=await make_actor(admin_db, services, org_b, "bob@b.test", Role.ADMIN),
    )


@pytest.fixture
async def client(
    settings: Settings, services: Services
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver"
    ) as c:
        yield c
