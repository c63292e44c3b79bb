"""Row level security on a real PostgreSQL 15, under the application role.

Two organizations, A and B. ``a1`` is a member of A, ``a2`` its super_admin,
``b1`` a member of B; each user owns one row in every tenant table. The data is
seeded as the owner role (``owner_all`` policy); every assertion then runs as
``crmflow_app`` with raw SQL through psycopg, setting the context exactly as
``store/db.py`` does (``set_config(..., true)`` inside the transaction), and
compares the rows it gets with the seeded ids. The last tests go through
:class:`crmflow.store.db.Database` itself.

Policies under test: ``crmflow.store.rls``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.errors import InsufficientPrivilege
from psycopg.types.json import Json
from sqlalchemy import select, text

from crmflow.domain.tenancy import Role, TenantContext
from crmflow.store.db import Database
from crmflow.store.models import Appointment, Base, Organization, User, tenancy_of
from tests.servers.postgres import APP_ROLE, OWNER_ROLE, PgDatabase

pytestmark = pytest.mark.postgres

ALL_TABLES = sorted(Base.metadata.tables)
IDENTITY = ["organizations", "user_organizations", "users"]
PERSONAL = sorted(t for t in ALL_TABLES if tenancy_of(t) == "personal")
SHARED = sorted(t for t in ALL_TABLES if tenancy_of(t) == "shared")
ORG_SECRET = sorted(t for t in ALL_TABLES if tenancy_of(t) == "org_secret")
#: no tenant data (key canaries): readable by every context, by design
SYSTEM = sorted(t for t in ALL_TABLES if tenancy_of(t) == "system")
TENANT = sorted(PERSONAL + SHARED + ORG_SECRET)

#: user -> (organization, role)
MEMBERS = {"a1": ("A", "member"), "a2": ("A", "super_admin"), "b1": ("B", "member")}

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


# ------------------------------------------------------------------ row builders


def full_row(table: str, **values: Any) -> dict[str, Any]:
    """``values`` plus the model's Python-side defaults for every other column.

    The database has no server defaults (the ORM supplies them), so raw INSERTs
    must spell out every NOT NULL column; a missing one fails loudly here.
    """
    row: dict[str, Any] = {}
    for column in Base.metadata.tables[table].columns:
        if column.name in values:
            row[column.name] = values.pop(column.name)
        elif column.default is not None:
            default: Any = column.default
            row[column.name] = default.arg(None) if default.is_callable else default.arg
        elif not column.nullable:
            raise KeyError(f"{table}.{column.name} needs a value")
    if values:
        raise KeyError(f"{table} has no columns {sorted(values)}")
    return row


def tenant_row(
    table: str, org: uuid.UUID, user: uuid.UUID, refs: dict[str, uuid.UUID]
) -> dict[str, Any]:
    """A valid row of a tenant table for ``user`` in ``org``.

    ``refs`` holds the ids of the same user's parent rows (account, message, ...).
    Every unique column gets a fresh value, so the builder can be called again.
    """
    tag = uuid.uuid4().hex[:12]
    personal = {"organization_id": org, "user_id": user}
    builders: dict[str, Callable[[], dict[str, Any]]] = {
        "appointments": lambda: full_row(
            table,
            **personal,
            title=f"meeting {tag}",
            start_at=T0,
            end_at=T0 + dt.timedelta(hours=1),
        ),
        "contacts": lambda: full_row(
            table, **personal, name=f"contact {tag}", email_addresses=[f"{tag}@x.test"]
        ),
        "user_integrations": lambda: full_row(
            table, **personal, provider="google", kind="calendar"
        ),
        "api_tokens": lambda: full_row(
            table,
            **personal,
            name=f"token {tag}",
            token_hash=hashlib.sha256(tag.encode()).hexdigest(),
            prefix=f"crm_{tag[:6]}",
        ),
        "email_accounts": lambda: full_row(
            table,
            **personal,
            integration_id=refs.get("user_integrations"),
            provider="google",
            email_address=f"{tag}@mail.test",
        ),
        "email_messages": lambda: full_row(
            table,
            **personal,
            email_account_id=refs["email_accounts"],
            provider_message_id=f"msg-{tag}",
            subject=f"subject {tag}",
        ),
        "email_attachments": lambda: full_row(
            table,
            **personal,
            email_message_id=refs["email_messages"],
            content_type="text/plain",
        ),
        "email_message_addresses": lambda: full_row(
            table,
            **personal,
            email_message_id=refs["email_messages"],
            role="from",
            link_key=f"{tag}@mail.test",
        ),
        "calendar_accounts": lambda: full_row(
            table,
            **personal,
            integration_id=refs.get("user_integrations"),
            provider="google",
            external_calendar_id=f"cal-{tag}",
            name=f"calendar {tag}",
        ),
        "calendar_event_mappings": lambda: full_row(
            table,
            **personal,
            appointment_id=refs.get("appointments"),
            calendar_account_id=refs["calendar_accounts"],
            external_event_id=f"evt-{tag}",
            ical_uid=f"uid-{tag}",
        ),
        "calendar_sync_conflicts": lambda: full_row(
            table,
            **personal,
            calendar_account_id=refs["calendar_accounts"],
            appointment_id=refs.get("appointments"),
            ical_uid=f"uid-{tag}",
            external_event_id=f"evt-{tag}",
            crm_version="1",
            crm_event={},
            calendar_version="e1",
            calendar_event={},
        ),
        "calendar_sync_log": lambda: full_row(
            table,
            **personal,
            calendar_account_id=refs.get("calendar_accounts"),
            sync_type="full",
            sync_direction="two_way",
        ),
        "push_channels": lambda: full_row(
            table,
            **personal,
            calendar_account_id=refs["calendar_accounts"],
            provider="google",
            channel_id=f"chan-{tag}",
            resource_id=f"res-{tag}",
            token_sha256="0" * 64,
        ),
        "integration_events": lambda: full_row(
            table,
            **personal,
            integration_id=refs.get("user_integrations"),
            provider="google",
            kind="calendar",
            event="connected",
        ),
        "oauth_flows": lambda: full_row(
            table,
            **personal,
            provider="google",
            kind="calendar",
            state=f"state-{tag}",
            code_verifier="v1:ciphertext",
            redirect_uri="http://127.0.0.1/cb",
            expires_at=T0,
        ),
        "oauth_secrets": lambda: full_row(
            table,
            organization_id=org,
            provider=f"google-{tag[:8]}",
            client_id=f"client-{tag}",
            client_secret="v1:ciphertext",
        ),
    }
    return builders[table]()


def insert(conn: psycopg.Connection[Any], table: str, row: dict[str, Any]) -> None:
    """``INSERT INTO table (...) VALUES (...)`` with JSON adaptation."""
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(table),
        sql.SQL(", ").join(sql.Identifier(c) for c in row),
        sql.SQL(", ").join(sql.Placeholder() * len(row)),
    )
    params = [Json(v) if isinstance(v, list | dict) else v for v in row.values()]
    conn.execute(query, params)


# ------------------------------------------------------------------------ world


@dataclass(frozen=True)
class Seeded:
    """One seeded row and who it belongs to."""

    id: uuid.UUID
    org: str
    #: None for organization-level rows (oauth_secrets)
    user: str | None
    values: dict[str, Any] = field(compare=False, repr=False)


@dataclass
class World:
    db: PgDatabase
    orgs: dict[str, uuid.UUID]
    users: dict[str, uuid.UUID]
    emails: dict[str, str]
    #: table -> seeded rows (tenant tables only)
    rows: dict[str, list[Seeded]]
    #: system table -> primary keys of its seeded rows
    system: dict[str, set[Any]]

    def ids(self, table: str, keep: Callable[[Seeded], bool]) -> set[uuid.UUID]:
        return {r.id for r in self.rows[table] if keep(r)}

    def row(self, table: str, user: str) -> Seeded:
        (found,) = [r for r in self.rows[table] if r.user == user]
        return found

    def row_of_org(self, table: str, org: str) -> Seeded:
        (found,) = [r for r in self.rows[table] if r.org == org]
        return found

    def refs(self, user: str) -> dict[str, uuid.UUID]:
        """The ids of ``user``'s own rows, by table (parents for new rows)."""
        return {t: self.row(t, user).id for t in PERSONAL + SHARED}


#: parents first
SEED_ORDER = [
    "appointments",
    "contacts",
    "user_integrations",
    "api_tokens",
    "email_accounts",
    "email_messages",
    "email_attachments",
    "email_message_addresses",
    "calendar_accounts",
    "calendar_event_mappings",
    "calendar_sync_log",
    "calendar_sync_conflicts",
    "push_channels",
    "integration_events",
    "oauth_flows",
]


@pytest.fixture
def world(pg_database: PgDatabase) -> World:
    """Organizations A and B with users a1, a2 (super_admin) and b1, and one row
    per user in every tenant table, inserted as the owner role."""
    orgs = {name: uuid.uuid4() for name in ("A", "B")}
    users = {name: uuid.uuid4() for name in MEMBERS}
    emails = {name: f"{name}@{MEMBERS[name][0].lower()}.test" for name in MEMBERS}
    rows: dict[str, list[Seeded]] = {t: [] for t in TENANT}
    with psycopg.connect(pg_database.admin_url) as conn:
        for name, org_id in orgs.items():
            insert(
                conn,
                "organizations",
                full_row("organizations", id=org_id, name=name, slug=name.lower()),
            )
            secret = tenant_row("oauth_secrets", org_id, users["a1"], {})
            insert(conn, "oauth_secrets", secret)
            rows["oauth_secrets"].append(Seeded(secret["id"], name, None, secret))
        for name, (org, role) in MEMBERS.items():
            insert(
                conn,
                "users",
                full_row(
                    "users",
                    id=users[name],
                    email=emails[name],
                    display_name=name,
                    password_hash="argon2id-placeholder",
                ),
            )
            insert(
                conn,
                "user_organizations",
                full_row(
                    "user_organizations",
                    user_id=users[name],
                    organization_id=orgs[org],
                    role=role,
                ),
            )
            refs: dict[str, uuid.UUID] = {}
            for table in SEED_ORDER:
                values = tenant_row(table, orgs[org], users[name], refs)
                insert(conn, table, values)
                refs[table] = values["id"]
                rows[table].append(Seeded(values["id"], org, name, values))
        insert(conn, "vault_keys", full_row("vault_keys", key_id="k1", canary="v1:x"))
    return World(pg_database, orgs, users, emails, rows, {"vault_keys": {"k1"}})


@contextmanager
def acting(
    world: World, user: str | None, org: str | None, **extra: str
) -> Iterator[psycopg.Connection[Any]]:
    """A transaction of the application role with this context set.

    ``user``/``org`` are names from the world (or None: not set); ``extra`` sets
    further keys, e.g. ``login_email``. Commits on exit.
    """
    settings = {
        "app.user_id": str(world.users[user]) if user else None,
        "app.org_id": str(world.orgs[org]) if org else None,
        **{f"app.{k}": v for k, v in extra.items()},
    }
    with psycopg.connect(world.db.app_url) as conn, conn.transaction():
        for key, value in settings.items():
            if value is not None:
                conn.execute("SELECT set_config(%s, %s, true)", (key, value))
        yield conn


def visible(conn: psycopg.Connection[Any], table: str) -> set[Any]:
    """The primary keys of the rows of ``table`` this transaction can see
    (a tuple for a composite key)."""
    key = [c.name for c in Base.metadata.tables[table].primary_key.columns]
    query = sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(map(sql.Identifier, key)), sql.Identifier(table)
    )
    return {r[0] if len(r) == 1 else tuple(r) for r in conn.execute(query)}


def nothing_but(world: World, **tables: set[Any]) -> dict[str, set[Any]]:
    """What a context sees that may see none of the tenant data: no row at all,
    except the system tables (and ``tables``)."""
    return {t: set() for t in ALL_TABLES} | world.system | tables


def memberships(world: World, *names: str) -> set[tuple[uuid.UUID, uuid.UUID]]:
    return {(world.users[n], world.orgs[MEMBERS[n][0]]) for n in names}


def count_as_owner(world: World, table: str, ids: set[uuid.UUID]) -> int:
    with psycopg.connect(world.db.admin_url) as conn:
        query = sql.SQL("SELECT count(*) FROM {} WHERE id = ANY(%s)").format(
            sql.Identifier(table)
        )
        row = conn.execute(query, (list(ids),)).fetchone()
        assert row is not None
        return int(row[0])


def execute_count(
    conn: psycopg.Connection[Any], query: sql.SQL | sql.Composed, params: Any = None
) -> int:
    """Run a write; returns how many rows it affected."""
    count: int = conn.execute(query, params).rowcount
    return count


# ----------------------------------------------------------------------- roles


def test_app_role_is_neither_superuser_nor_bypassrls(pg_database: PgDatabase) -> None:
    with psycopg.connect(pg_database.app_url) as conn:
        row = conn.execute(
            "SELECT current_user, rolsuper, rolbypassrls, rolcreatedb, rolcreaterole "
            "FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
    assert row == (APP_ROLE, False, False, False, False)


def test_owner_role_is_not_superuser_either(pg_database: PgDatabase) -> None:
    with psycopg.connect(pg_database.admin_url) as conn:
        row = conn.execute(
            "SELECT current_user, rolsuper, rolbypassrls FROM pg_roles "
            "WHERE rolname = current_user"
        ).fetchone()
    assert row == (OWNER_ROLE, False, False)


def test_app_role_owns_nothing_and_cannot_create(pg_database: PgDatabase) -> None:
    with psycopg.connect(pg_database.app_url) as conn:
        owned = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE pg_get_userbyid(c.relowner) = current_user AND n.nspname = 'public'"
        ).fetchall()
        owners = conn.execute(
            "SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c "
            "WHERE c.relkind = 'r' AND c.relname = ANY(%s)",
            (ALL_TABLES,),
        ).fetchall()
        can_create = conn.execute(
            "SELECT has_schema_privilege('public', 'CREATE'), "
            "has_table_privilege('alembic_version', 'SELECT')"
        ).fetchone()
        with pytest.raises(InsufficientPrivilege):
            conn.execute("CREATE TABLE sneaky (id int)")
    assert owned == []
    assert owners == [(OWNER_ROLE,)]
    assert can_create == (False, False)


def test_every_table_forces_row_level_security(pg_database: PgDatabase) -> None:
    with psycopg.connect(pg_database.app_url) as conn:
        flags = {
            name: (rls, force)
            for name, rls, force in conn.execute(
                "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind = 'r'"
            )
        }
    assert {t: flags.get(t) for t in ALL_TABLES} == dict.fromkeys(
        ALL_TABLES, (True, True)
    )


def test_member_role_function_is_not_public(pg_database: PgDatabase) -> None:
    with psycopg.connect(pg_database.superuser_url) as conn:
        row = conn.execute(
            "SELECT p.prosecdef, pg_get_userbyid(p.proowner), "
            "has_function_privilege('public', p.oid, 'EXECUTE'), "
            "has_function_privilege(%s, p.oid, 'EXECUTE') "
            "FROM pg_proc p WHERE p.proname = 'crmflow_member_role'",
            (APP_ROLE,),
        ).fetchone()
    assert row == (True, OWNER_ROLE, False, True)


# ------------------------------------------------------------------------ reads


def test_seed_covers_every_table(world: World) -> None:
    assert sorted(IDENTITY + TENANT + SYSTEM) == ALL_TABLES
    assert sorted(world.system) == SYSTEM
    with psycopg.connect(world.db.superuser_url) as conn:
        for table in TENANT:
            assert len(visible(conn, table)) == len(world.rows[table]), table
            assert {r.org for r in world.rows[table]} == {"A", "B"}, table


def test_member_sees_own_org_shared_rows_and_only_own_personal_rows(
    world: World,
) -> None:
    with acting(world, "a1", "A") as conn:
        seen = {t: visible(conn, t) for t in ALL_TABLES}
    for table in SHARED + ORG_SECRET:
        assert seen[table] == world.ids(table, lambda r: r.org == "A"), table
    for table in PERSONAL:
        assert seen[table] == world.ids(table, lambda r: r.user == "a1"), table
    assert seen["organizations"] == {world.orgs["A"]}
    assert seen["users"] == {world.users["a1"], world.users["a2"]}
    assert seen["user_organizations"] == memberships(world, "a1", "a2")
    for table in SYSTEM:
        assert seen[table] == world.system[table], table


def test_super_admin_reads_every_personal_row_of_own_org_only(world: World) -> None:
    with acting(world, "a2", "A") as conn:
        seen = {t: visible(conn, t) for t in [*TENANT, "organizations"]}
    for table in TENANT:
        assert seen[table] == world.ids(table, lambda r: r.org == "A"), table
    assert seen["organizations"] == {world.orgs["A"]}


def test_other_organization_sees_only_its_own_rows(world: World) -> None:
    with acting(world, "b1", "B") as conn:
        seen = {t: visible(conn, t) for t in ALL_TABLES}
    for table in TENANT:
        assert seen[table] == world.ids(table, lambda r: r.org == "B"), table
    assert seen["organizations"] == {world.orgs["B"]}
    assert seen["users"] == {world.users["b1"]}
    assert seen["user_organizations"] == memberships(world, "b1")


def test_forged_organization_sees_nothing_of_it(world: World) -> None:
    # b1 is no member of A: claiming A in app.org_id must not open A's rows.
    with acting(world, "b1", "A") as conn:
        seen = {t: visible(conn, t) for t in ALL_TABLES}
        for table in ("contacts", "user_integrations"):
            row = tenant_row(table, world.orgs["A"], world.users["b1"], {})
            with pytest.raises(InsufficientPrivilege), conn.transaction():
                insert(conn, table, row)
        changed = execute_count(
            conn,
            sql.SQL(
                "UPDATE appointments SET title = 'forged' WHERE organization_id = %s"
            ),
            (world.orgs["A"],),
        )
    for table in TENANT:
        assert seen[table] == set(), table
    assert seen["organizations"] == {world.orgs["B"]}
    assert seen["users"] == {world.users["b1"]}
    assert seen["user_organizations"] == memberships(world, "b1")
    assert changed == 0


def test_no_context_sees_no_row_and_writes_nothing(world: World) -> None:
    with acting(world, None, None) as conn:
        seen = {t: visible(conn, t) for t in ALL_TABLES}
        with pytest.raises(InsufficientPrivilege), conn.transaction():
            insert(
                conn,
                "contacts",
                tenant_row("contacts", world.orgs["A"], world.users["a1"], {}),
            )
        deleted = execute_count(conn, sql.SQL("DELETE FROM appointments"))
    assert seen == nothing_but(world)
    assert deleted == 0
    assert count_as_owner(world, "appointments", world.ids("appointments", bool)) == 3


def test_login_email_reveals_exactly_that_user(world: World) -> None:
    with acting(world, None, None, login_email=world.emails["a2"]) as conn:
        seen = {t: visible(conn, t) for t in ALL_TABLES}
    assert seen == nothing_but(world, users={world.users["a2"]})


def test_token_hash_reveals_exactly_that_token(world: World) -> None:
    token = world.row("api_tokens", "b1")
    with acting(world, None, None, token_hash=token.values["token_hash"]) as conn:
        seen = {t: visible(conn, t) for t in ALL_TABLES}
        # the sign-in lookup may read the token, not change it
        touched = execute_count(
            conn,
            sql.SQL("UPDATE api_tokens SET last_used_at = now() WHERE id = %s"),
            (token.id,),
        )
    assert seen == nothing_but(world, api_tokens={token.id})
    assert touched == 0


def test_unknown_login_email_and_token_hash_reveal_nothing(world: World) -> None:
    with acting(
        world, None, None, login_email="nobody@a.test", token_hash="0" * 64
    ) as conn:
        seen = {t: visible(conn, t) for t in ALL_TABLES}
    assert seen == nothing_but(world)


@pytest.mark.parametrize("end", ["commit", "rollback"])
def test_context_does_not_outlive_its_transaction(world: World, end: str) -> None:
    appointments_of_a = world.ids("appointments", lambda r: r.org == "A")
    with psycopg.connect(world.db.app_url) as conn:
        conn.execute(
            "SELECT set_config('app.user_id', %s, true), set_config('app.org_id', %s, true)",
            (str(world.users["a1"]), str(world.orgs["A"])),
        )
        during = visible(conn, "appointments")
        conn.commit() if end == "commit" else conn.rollback()
        after = visible(conn, "appointments")
        settings = conn.execute(
            "SELECT current_setting('app.user_id', true), "
            "current_setting('app.org_id', true)"
        ).fetchone()
        conn.rollback()
    assert during == appointments_of_a
    assert after == set()
    # reverted to '' (not NULL): the reason the policies wrap it in NULLIF
    assert settings == ("", "")


# ----------------------------------------------------------------------- writes


@pytest.mark.parametrize("table", SYSTEM)
def test_system_rows_cannot_be_changed_by_the_app_role(
    world: World, table: str
) -> None:
    key = [c.name for c in Base.metadata.tables[table].primary_key.columns]
    where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder()) for c in key
    )
    (existing,) = world.system[table]
    params = existing if isinstance(existing, tuple) else (existing,)
    update = sql.SQL("UPDATE {} SET {} = {}").format(
        sql.Identifier(table), sql.Identifier(key[0]), sql.Identifier(key[0])
    )
    delete = sql.SQL("DELETE FROM {}").format(sql.Identifier(table))
    with acting(world, "a2", "A") as conn:
        changed = (
            execute_count(conn, update + where, params),
            execute_count(conn, delete + where, params),
        )
    assert changed == (0, 0)


@pytest.mark.parametrize("table", PERSONAL)
def test_personal_row_for_another_user_or_org_is_refused(
    world: World, table: str
) -> None:
    a1, a2 = world.users["a1"], world.users["a2"]
    org_a, org_b = world.orgs["A"], world.orgs["B"]
    refs = world.refs("a1")
    with acting(world, "a1", "A") as conn:
        for org, user in ((org_a, a2), (org_b, a1), (org_b, world.users["b1"])):
            row = tenant_row(table, org, user, refs)
            if table == "user_integrations":
                row["kind"] = "mail"  # (user_id, provider, kind) is unique
            with pytest.raises(InsufficientPrivilege), conn.transaction():
                insert(conn, table, row)
        # control: the same row for a1 in A is accepted
        own = tenant_row(table, org_a, a1, refs)
        if table == "user_integrations":
            own["kind"] = "mail"
        if table == "email_accounts":
            own["integration_id"] = None  # (user_id, integration_id) is unique
        insert(conn, table, own)
        mine = visible(conn, table)
    assert mine == world.ids(table, lambda r: r.user == "a1") | {own["id"]}


@pytest.mark.parametrize("table", SHARED)
def test_shared_row_in_another_org_is_refused(world: World, table: str) -> None:
    a1, org_a, org_b = world.users["a1"], world.orgs["A"], world.orgs["B"]
    with acting(world, "a1", "A") as conn:
        with pytest.raises(InsufficientPrivilege), conn.transaction():
            insert(conn, table, tenant_row(table, org_b, a1, {}))
        row = tenant_row(table, org_a, a1, {})
        insert(conn, table, row)
        seen = visible(conn, table)
    assert row["id"] in seen


@pytest.mark.parametrize("table", TENANT)
def test_other_orgs_rows_cannot_be_updated_or_deleted(world: World, table: str) -> None:
    theirs = world.ids(table, lambda r: r.org == "B")
    by_id = sql.SQL("WHERE id = ANY(%s)")
    update = sql.SQL("UPDATE {} SET organization_id = organization_id ").format(
        sql.Identifier(table)
    )
    delete = sql.SQL("DELETE FROM {} ").format(sql.Identifier(table))
    # a2 is super_admin of A: the strongest tenant role still stops at A's border
    with acting(world, "a2", "A") as conn:
        updated = execute_count(conn, update + by_id, (list(theirs),))
        deleted = execute_count(conn, delete + by_id, (list(theirs),))
    assert (updated, deleted) == (0, 0)
    assert count_as_owner(world, table, theirs) == len(theirs) == 1


@pytest.mark.parametrize("table", PERSONAL)
def test_super_admin_cannot_write_another_members_personal_rows(
    world: World, table: str
) -> None:
    theirs = world.row(table, "a1").id
    update = sql.SQL("UPDATE {} SET user_id = user_id WHERE id = %s").format(
        sql.Identifier(table)
    )
    delete = sql.SQL("DELETE FROM {} WHERE id = %s").format(sql.Identifier(table))
    with acting(world, "a2", "A") as conn:
        assert theirs in visible(conn, table)  # reading is allowed ...
        updated = execute_count(conn, update, (theirs,))  # ... writing is not
        deleted = execute_count(conn, delete, (theirs,))
        own = world.row(table, "a2").id
        control = execute_count(
            conn,
            sql.SQL("UPDATE {} SET user_id = user_id WHERE id = %s").format(
                sql.Identifier(table)
            ),
            (own,),
        )
    assert (updated, deleted, control) == (0, 0, 1)


@pytest.mark.parametrize("table", ["appointments", "contacts", "user_integrations"])
def test_moving_a_row_to_another_org_is_refused(world: World, table: str) -> None:
    mine = world.row(table, "a1").id
    move = sql.SQL("UPDATE {} SET organization_id = %s WHERE id = %s").format(
        sql.Identifier(table)
    )
    with acting(world, "a1", "A") as conn:
        with pytest.raises(InsufficientPrivilege), conn.transaction():
            conn.execute(move, (world.orgs["B"], mine))
        still = visible(conn, table)
    assert mine in still


def test_member_cannot_write_org_secrets_or_memberships(world: World) -> None:
    org_a, b1 = world.orgs["A"], world.users["b1"]
    secret = world.row_of_org("oauth_secrets", "A")
    with acting(world, "a1", "A") as conn:
        with pytest.raises(InsufficientPrivilege), conn.transaction():
            insert(conn, "oauth_secrets", tenant_row("oauth_secrets", org_a, b1, {}))
        with pytest.raises(InsufficientPrivilege), conn.transaction():
            insert(
                conn,
                "user_organizations",
                full_row("user_organizations", user_id=b1, organization_id=org_a),
            )
        changed = [
            execute_count(
                conn,
                sql.SQL("UPDATE oauth_secrets SET client_id = 'stolen' WHERE id = %s"),
                (secret.id,),
            ),
            execute_count(
                conn,
                sql.SQL("DELETE FROM oauth_secrets WHERE id = %s"),
                (secret.id,),
            ),
            # no self-promotion
            execute_count(
                conn,
                sql.SQL(
                    "UPDATE user_organizations SET role = 'super_admin' "
                    "WHERE user_id = %s"
                ),
                (world.users["a1"],),
            ),
            execute_count(
                conn,
                sql.SQL("DELETE FROM user_organizations WHERE user_id = %s"),
                (world.users["a2"],),
            ),
            # no writes to other users' accounts
            execute_count(
                conn,
                sql.SQL("UPDATE users SET display_name = 'x' WHERE id = %s"),
                (world.users["a2"],),
            ),
        ]
        with pytest.raises(InsufficientPrivilege), conn.transaction():
            insert(
                conn,
                "users",
                full_row(
                    "users", email="new@a.test", display_name="n", password_hash="h"
                ),
            )
        own_profile = execute_count(
            conn,
            sql.SQL("UPDATE users SET display_name = 'me' WHERE id = %s"),
            (world.users["a1"],),
        )
    assert changed == [0, 0, 0, 0, 0]
    assert own_profile == 1
    with psycopg.connect(world.db.admin_url) as conn:
        row = conn.execute(
            "SELECT client_id FROM oauth_secrets WHERE id = %s", (secret.id,)
        ).fetchone()
        role = conn.execute(
            "SELECT role FROM user_organizations WHERE user_id = %s",
            (world.users["a1"],),
        ).fetchone()
    assert row == (secret.values["client_id"],)
    assert role == ("member",)


def test_admin_writes_secrets_and_memberships_of_own_org_only(world: World) -> None:
    org_a, org_b, b1 = world.orgs["A"], world.orgs["B"], world.users["b1"]
    secret = world.row_of_org("oauth_secrets", "A")
    with acting(world, "a2", "A") as conn:
        insert(conn, "oauth_secrets", tenant_row("oauth_secrets", org_a, b1, {}))
        updated = execute_count(
            conn,
            sql.SQL("UPDATE oauth_secrets SET client_id = 'rotated' WHERE id = %s"),
            (secret.id,),
        )
        insert(
            conn,
            "user_organizations",
            full_row("user_organizations", user_id=b1, organization_id=org_a),
        )
        with pytest.raises(InsufficientPrivilege), conn.transaction():
            insert(conn, "oauth_secrets", tenant_row("oauth_secrets", org_b, b1, {}))
        with pytest.raises(InsufficientPrivilege), conn.transaction():
            insert(
                conn,
                "user_organizations",
                full_row(
                    "user_organizations",
                    user_id=world.users["a1"],
                    organization_id=org_b,
                ),
            )
        members = visible(conn, "user_organizations")
    assert updated == 1
    assert members == memberships(world, "a1", "a2") | {(b1, org_a)}


# -------------------------------------------------- through crmflow.store.db


def ctx(world: World, user: str, org: str) -> TenantContext:
    return TenantContext(
        user_id=world.users[user],
        organization_id=world.orgs[org],
        role=Role(MEMBERS[user][1]),
    )


async def test_database_tenant_session_sets_the_context(world: World) -> None:
    db = Database(world.db.app_url)
    try:
        async with db.tenant(ctx(world, "a1", "A")) as session:
            a_rows = set(await session.scalars(select(Appointment.id)))
            orgs = set(await session.scalars(select(Organization.id)))
            pid_tenant = await session.scalar(text("SELECT pg_backend_pid()"))
        async with db.tenant(ctx(world, "b1", "B")) as session:
            b_rows = set(await session.scalars(select(Appointment.id)))
        async with db.tenant(ctx(world, "b1", "A")) as session:
            forged = set(await session.scalars(select(Appointment.id)))
        async with db.admin() as session:
            # the pooled connection that just served b1 keeps no context
            nothing = set(await session.scalars(select(Appointment.id)))
            pid_admin = await session.scalar(text("SELECT pg_backend_pid()"))
        async with db.as_user(world.users["a1"]) as session:
            as_user = (
                set(await session.scalars(select(User.id))),
                set(await session.scalars(select(Organization.id))),
                set(await session.scalars(select(Appointment.id))),
            )
        async with db.login_lookup(email=world.emails["b1"].upper()) as session:
            login = set(await session.scalars(select(User.id)))
    finally:
        await db.dispose()
    assert a_rows == world.ids("appointments", lambda r: r.org == "A")
    assert orgs == {world.orgs["A"]}
    assert b_rows == world.ids("appointments", lambda r: r.org == "B")
    assert forged == set()
    assert nothing == set()
    assert pid_admin == pid_tenant  # one pooled connection served every session
    assert as_user == ({world.users["a1"]}, {world.orgs["A"]}, set())
    assert login == {world.users["b1"]}


async def test_database_tenant_session_writes_through_the_orm(world: World) -> None:
    db = Database(world.db.app_url)
    try:
        async with db.tenant(ctx(world, "a1", "A")) as session:
            mine = Appointment(
                organization_id=world.orgs["A"],
                user_id=world.users["a1"],
                title="orm",
                start_at=T0,
                end_at=T0 + dt.timedelta(minutes=30),
            )
            session.add(mine)
        with pytest.raises(Exception, match="row-level security") as refused:
            async with db.tenant(ctx(world, "a1", "A")) as session:
                session.add(
                    Appointment(
                        organization_id=world.orgs["B"],
                        user_id=world.users["a1"],
                        title="smuggled",
                        start_at=T0,
                        end_at=T0 + dt.timedelta(minutes=30),
                    )
                )
        async with db.tenant(ctx(world, "a2", "A")) as session:
            seen = set(await session.scalars(select(Appointment.title)))
    finally:
        await db.dispose()
    assert isinstance(refused.value.__cause__, InsufficientPrivilege)
    assert "orm" in seen
    assert "smuggled" not in seen


async def test_owner_database_admin_session_sees_every_row(world: World) -> None:
    db = Database(world.db.admin_url)
    try:
        async with db.admin() as session:
            rows = set(await session.scalars(select(Appointment.id)))
    finally:
        await db.dispose()
    assert rows == world.ids("appointments", bool)
