"""PostgreSQL row level security: the policies migrations install.

Every tenant table gets ``ENABLE`` and ``FORCE ROW LEVEL SECURITY``. The
application connects as a non-owner role and sets, at the start of every
transaction (``set_config(..., true)``, so nothing leaks across pooled
connections):

``app.user_id``
    the acting user;
``app.org_id``
    the acting organization;
``app.login_email`` / ``app.token_hash``
    only while signing in: make exactly one user / API token row visible.

Membership is checked *in the database* by ``crmflow_member_role(org)``, a
``SECURITY DEFINER`` function owned by the migration role: policies never trust
``app.org_id`` alone, so a forged organization id sees nothing. (A policy on
``user_organizations`` cannot query ``user_organizations`` itself - PostgreSQL
rejects the recursion - hence the function.)

The migration role (the tables' owner) gets an explicit full-access policy: with
``FORCE`` it is otherwise subject to the tenant policies too, and it must still
run migrations, provisioning and key rotation.

With no context set every policy evaluates to NULL: no rows are visible and
every write is refused.
"""

from __future__ import annotations

from collections.abc import Iterable

from crmflow.store.models import Base, tenancy_of

USER = "NULLIF(current_setting('app.user_id', true), '')::uuid"
ORG = "NULLIF(current_setting('app.org_id', true), '')::uuid"
LOGIN_EMAIL = "NULLIF(current_setting('app.login_email', true), '')"
TOKEN_HASH = "NULLIF(current_setting('app.token_hash', true), '')"
#: the acting user's role in the acting organization, evaluated once per query
ROLE = f"(SELECT crmflow_member_role({ORG}))"
IS_MEMBER = f"{ROLE} IS NOT NULL"
IS_ADMIN = f"{ROLE} IN ('admin', 'super_admin')"
IS_SUPER = f"{ROLE} = 'super_admin'"

MEMBER_ROLE_FUNCTION = f"""
CREATE OR REPLACE FUNCTION crmflow_member_role(org uuid) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT role FROM public.user_organizations
    WHERE user_id = {USER} AND organization_id = org
$$
"""


def _policy(
    table: str, name: str, command: str, using: str | None, check: str | None
) -> str:
    sql = f"CREATE POLICY {name} ON {table} AS PERMISSIVE FOR {command} TO PUBLIC"
    if using is not None:
        sql += f" USING ({using})"
    if check is not None:
        sql += f" WITH CHECK ({check})"
    return sql


def _write_policies(table: str, rule: str) -> list[str]:
    return [
        _policy(table, "tenant_insert", "INSERT", None, rule),
        _policy(table, "tenant_update", "UPDATE", rule, rule),
        _policy(table, "tenant_delete", "DELETE", rule, None),
    ]


def policies_for(table: str) -> list[str]:
    """The policy statements of one table, by its declared tenancy class."""
    tenancy = tenancy_of(table)
    if tenancy == "personal":
        own = f"organization_id = {ORG} AND user_id = {USER} AND {IS_MEMBER}"
        read = f"organization_id = {ORG} AND {IS_MEMBER} AND (user_id = {USER} OR {IS_SUPER})"
        stmts = [_policy(table, "tenant_select", "SELECT", read, None)]
        if table == "api_tokens":
            # Bearer sign-in: exactly the row whose hash the caller presented.
            stmts.append(
                _policy(
                    table, "token_lookup", "SELECT", f"token_hash = {TOKEN_HASH}", None
                )
            )
        return stmts + _write_policies(table, own)
    if tenancy == "shared":
        rule = f"organization_id = {ORG} AND {IS_MEMBER}"
        if not Base.metadata.tables[table].info.get("owner_writes"):
            return [
                _policy(table, "tenant_select", "SELECT", rule, None),
                *_write_policies(table, rule),
            ]
        # Shared reads, but only the owner or an admin changes a row; new rows
        # belong to the acting user.
        change = f"{rule} AND (user_id = {USER} OR {IS_ADMIN})"
        return [
            _policy(table, "tenant_select", "SELECT", rule, None),
            _policy(
                table, "tenant_insert", "INSERT", None, f"{rule} AND user_id = {USER}"
            ),
            _policy(table, "tenant_update", "UPDATE", change, change),
            _policy(table, "tenant_delete", "DELETE", change, None),
        ]
    if tenancy == "org_secret":
        return [
            _policy(
                table,
                "tenant_select",
                "SELECT",
                f"organization_id = {ORG} AND {IS_MEMBER}",
                None,
            ),
            *_write_policies(table, f"organization_id = {ORG} AND {IS_ADMIN}"),
        ]
    if tenancy == "system":
        # No tenant data: readable and insertable by the service in any context.
        return [
            _policy(table, "system_select", "SELECT", "true", None),
            _policy(table, "system_insert", "INSERT", None, "true"),
        ]
    if table == "organizations":
        return [
            _policy(
                table,
                "tenant_select",
                "SELECT",
                "crmflow_member_role(id) IS NOT NULL",
                None,
            ),
            _policy(
                table,
                "tenant_update",
                "UPDATE",
                f"id = {ORG} AND {IS_ADMIN}",
                f"id = {ORG}",
            ),
        ]
    if table == "users":
        visible = (
            f"id = {USER} OR lower(email) = {LOGIN_EMAIL} OR id IN "
            f"(SELECT m.user_id FROM user_organizations m WHERE m.organization_id = {ORG})"
        )
        return [
            _policy(table, "tenant_select", "SELECT", visible, None),
            _policy(table, "tenant_insert", "INSERT", None, IS_ADMIN),
            _policy(table, "tenant_update", "UPDATE", f"id = {USER}", f"id = {USER}"),
        ]
    if table == "user_organizations":
        visible = (
            f"user_id = {USER} OR crmflow_member_role(organization_id) IS NOT NULL"
        )
        return [
            _policy(table, "tenant_select", "SELECT", visible, None),
            *_write_policies(table, f"organization_id = {ORG} AND {IS_ADMIN}"),
        ]
    raise ValueError(f"no row level security rule for table {table!r}")


def enable_statements(tables: Iterable[str] | None = None) -> list[str]:
    """Everything that installs row level security (idempotent per table)."""
    names = sorted(tables) if tables is not None else sorted(Base.metadata.tables)
    stmts = [MEMBER_ROLE_FUNCTION.strip()]
    stmts.append("REVOKE ALL ON FUNCTION crmflow_member_role(uuid) FROM PUBLIC")
    for table in names:
        stmts += [
            f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY",
            f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY",
            f"CREATE POLICY owner_all ON {table} AS PERMISSIVE FOR ALL TO CURRENT_USER "
            "USING (true) WITH CHECK (true)",
            *policies_for(table),
        ]
    return stmts


def drop_policy_statements(tables: Iterable[str]) -> list[str]:
    """Drop every policy on ``tables``: run before dropping the tables.

    A policy may read another table (``users`` reads ``user_organizations``), and
    PostgreSQL refuses to drop a table another table's policy depends on, so
    dropping tables one by one fails unless the policies go first.
    """
    names = ", ".join("'" + t.replace("'", "''") + "'" for t in sorted(tables))
    if not names:
        return []
    return [
        "DO $$ DECLARE p record; BEGIN "
        "FOR p IN SELECT schemaname, tablename, policyname FROM pg_policies "
        f"WHERE schemaname = current_schema() AND tablename IN ({names}) LOOP "
        "EXECUTE format('DROP POLICY %I ON %I.%I', "
        "p.policyname, p.schemaname, p.tablename); "
        "END LOOP; END $$"
    ]


def grant_statements(app_role: str) -> list[str]:
    """DML grants for the application role (no DDL, no ownership)."""
    role = '"' + app_role.replace('"', '""') + '"'
    return [
        f"GRANT USAGE ON SCHEMA public TO {role}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}",
        f"GRANT EXECUTE ON FUNCTION crmflow_member_role(uuid) TO {role}",
        # alembic's bookkeeping is not the application's business
        f"REVOKE ALL ON TABLE alembic_version FROM {role}",
    ]
