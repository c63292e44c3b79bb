"""email: mailbox sync state, threading, addresses for contact linking, search

Email accounts get a one-sync-at-a-time lease, the last error in words, and the
start of their import window. Messages get their folder, the provider's thread,
In-Reply-To/References, a de-duplication key (Message-ID, or a content hash for
mail without one), the address text that search reads, and whether they carry
attachments. ``email_message_addresses`` holds every correspondent's link key
(normalized address), which is how messages are linked to contacts: a contact
created later sees its earlier mail. Attachments get the SHA-256 of their
content (the blob store's key) and their inline flag.

Full-text search: on PostgreSQL a generated ``tsvector`` column with a GIN
index, in the text search configuration ``crmflow_search``: ``simple`` (no
stemming, so names, addresses and mixed languages match as written) behind
``unaccent`` (so "schone" finds "Schöne", as SQLite's ``remove_diacritics``
does); on SQLite an FTS5 table whose rowid is the message row's rowid. The
``unaccent`` extension ships with PostgreSQL (contrib) and is trusted, so the
database owner can create it; downgrading leaves it installed.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from crmflow.store.rls import drop_policy_statements, enable_statements

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: tables this revision creates; each gets row level security on PostgreSQL
NEW_TABLES = ("email_message_addresses",)

#: the text search configuration search uses (crmflow.store.mail knows it too)
SEARCH_CONFIG = "crmflow_search"
_PG_SEARCH = (
    f"setweight(to_tsvector('{SEARCH_CONFIG}', coalesce(subject, '')), 'A') || "
    f"setweight(to_tsvector('{SEARCH_CONFIG}', coalesce(addresses_text, '')), 'B') || "
    f"setweight(to_tsvector('{SEARCH_CONFIG}', coalesce(body_text, '')), 'C')"
)


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    with op.batch_alter_table("email_accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_error", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("sync_lease_until", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("import_since", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.create_unique_constraint(
            batch_op.f("uq_email_accounts_user_id_integration_id"),
            ["user_id", "integration_id"],
        )

    with op.batch_alter_table("email_messages", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "folder", sa.String(length=10), nullable=False, server_default="inbox"
            )
        )
        batch_op.add_column(
            sa.Column("provider_thread_id", sa.String(length=500), nullable=True)
        )
        batch_op.add_column(
            sa.Column("in_reply_to", sa.String(length=998), nullable=True)
        )
        batch_op.add_column(
            sa.Column("references", sa.JSON(), nullable=False, server_default="[]")
        )
        batch_op.add_column(
            sa.Column("dedupe_key", sa.String(length=998), nullable=True)
        )
        batch_op.add_column(sa.Column("addresses_text", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("from_name", sa.String(length=200), nullable=True)
        )
        batch_op.add_column(
            sa.Column(
                "has_attachments",
                sa.Boolean(),
                nullable=False,
                server_default=sa.false(),
            )
        )
        batch_op.create_index(
            batch_op.f("ix_email_messages_email_account_id_dedupe_key"),
            ["email_account_id", "dedupe_key"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_email_messages_user_id_received_at"),
            ["user_id", "received_at"],
            unique=False,
        )

    with op.batch_alter_table("email_attachments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sha256", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("inline", sa.Boolean(), nullable=False, server_default=sa.false())
        )

    op.create_table(
        "email_message_addresses",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("email_message_id", sa.Uuid(), nullable=False),
        sa.Column("role", sa.String(length=4), nullable=False),
        sa.Column("link_key", sa.String(length=320), nullable=False),
        sa.CheckConstraint(
            "role IN ('from', 'to', 'cc', 'bcc')",
            name=op.f("ck_email_message_addresses_role"),
        ),
        sa.ForeignKeyConstraint(
            ["email_message_id"],
            ["email_messages.id"],
            name=op.f("fk_email_message_addresses_email_message_id_email_messages"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_email_message_addresses_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_email_message_addresses_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_message_addresses")),
        info={"tenancy": "personal"},
    )
    with op.batch_alter_table("email_message_addresses", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_email_message_addresses_email_message_id"),
            ["email_message_id"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_email_message_addresses_organization_id_link_key"),
            ["organization_id", "link_key"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_email_message_addresses_user_id"), ["user_id"], unique=False
        )

    if dialect == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS unaccent")
        op.execute(f"CREATE TEXT SEARCH CONFIGURATION {SEARCH_CONFIG} (COPY = simple)")
        op.execute(
            f"ALTER TEXT SEARCH CONFIGURATION {SEARCH_CONFIG} ALTER MAPPING FOR "
            "hword, hword_part, word WITH unaccent, simple"
        )
        op.execute(
            "ALTER TABLE email_messages ADD COLUMN search_vector tsvector "
            f"GENERATED ALWAYS AS ({_PG_SEARCH}) STORED"
        )
        op.execute(
            "CREATE INDEX ix_email_messages_search_vector ON email_messages "
            "USING gin (search_vector)"
        )
        for stmt in enable_statements(NEW_TABLES):
            op.execute(stmt)
    elif dialect == "sqlite":
        # rowid = email_messages.rowid; kept in step by the message store
        op.execute(
            "CREATE VIRTUAL TABLE email_search USING fts5("
            "subject, addresses, body, tokenize = 'unicode61 remove_diacritics 2')"
        )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        for stmt in drop_policy_statements(NEW_TABLES):
            op.execute(stmt)
        op.execute("DROP INDEX IF EXISTS ix_email_messages_search_vector")
        op.execute("ALTER TABLE email_messages DROP COLUMN search_vector")
        op.execute(f"DROP TEXT SEARCH CONFIGURATION IF EXISTS {SEARCH_CONFIG}")
    elif dialect == "sqlite":
        op.execute("DROP TABLE IF EXISTS email_search")
    with op.batch_alter_table("email_message_addresses", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_email_message_addresses_user_id"))
        batch_op.drop_index(
            batch_op.f("ix_email_message_addresses_organization_id_link_key")
        )
        batch_op.drop_index(batch_op.f("ix_email_message_addresses_email_message_id"))
    op.drop_table("email_message_addresses")
    with op.batch_alter_table("email_attachments", schema=None) as batch_op:
        batch_op.drop_column("inline")
        batch_op.drop_column("sha256")
    with op.batch_alter_table("email_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_email_messages_user_id_received_at"))
        batch_op.drop_index(batch_op.f("ix_email_messages_email_account_id_dedupe_key"))
        for column in (
            "has_attachments",
            "from_name",
            "addresses_text",
            "dedupe_key",
            "references",
            "in_reply_to",
            "provider_thread_id",
            "folder",
        ):
            batch_op.drop_column(column)
    with op.batch_alter_table("email_accounts", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("uq_email_accounts_user_id_integration_id"), type_="unique"
        )
        batch_op.drop_column("import_since")
        batch_op.drop_column("sync_lease_until")
        batch_op.drop_column("last_error")
