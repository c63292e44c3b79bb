"""push channels: Google Calendar watch channels of synced calendars

One row per live channel: the provider's channel and resource ids, the
SHA-256 of the channel's token (the token itself is a secret shared with the
provider and is never stored), when it expires, and the highest message
number seen (a replayed notification triggers nothing). Personal tenancy: on
PostgreSQL only the owner of the calendar account sees its channels.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from crmflow.store.rls import drop_policy_statements, enable_statements

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW_TABLES = ("push_channels",)


def upgrade() -> None:
    op.create_table(
        "push_channels",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("calendar_account_id", sa.Uuid(), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("channel_id", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=200), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_message", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["calendar_account_id"],
            ["calendar_accounts.id"],
            name=op.f("fk_push_channels_calendar_account_id_calendar_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_push_channels_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_push_channels_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_push_channels")),
        sa.UniqueConstraint("channel_id", name=op.f("uq_push_channels_channel_id")),
    )
    with op.batch_alter_table("push_channels", schema=None) as batch_op:
        for column in ("calendar_account_id", "organization_id", "user_id"):
            batch_op.create_index(
                batch_op.f(f"ix_push_channels_{column}"), [column], unique=False
            )
    if op.get_bind().dialect.name == "postgresql":
        for stmt in enable_statements(NEW_TABLES):
            op.execute(stmt)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for stmt in drop_policy_statements(NEW_TABLES):
            op.execute(stmt)
    op.drop_table("push_channels")
