"""push for Microsoft Graph: subscriptions on calendars and mailboxes

``push_channels`` also holds Graph change-notification subscriptions: a row
belongs to a calendar account or (new) to an email account, never both.
``recent`` keeps short digests of the latest change notifications, which is
how a replayed Graph notification (Graph has no message numbers) is told
apart. ``sync_pushed`` on both account tables says that the account is due
because a notification came in, so its run is logged as ``webhook``.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACCOUNT_TABLES = ("calendar_accounts", "email_accounts")
ONE_OWNER = "(calendar_account_id IS NULL) <> (email_account_id IS NULL)"


def upgrade() -> None:
    with op.batch_alter_table("push_channels", schema=None) as batch_op:
        batch_op.alter_column(
            "calendar_account_id", existing_type=sa.Uuid(), nullable=True
        )
        batch_op.add_column(sa.Column("email_account_id", sa.Uuid(), nullable=True))
        batch_op.add_column(
            sa.Column("recent", sa.Text(), nullable=False, server_default="")
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_push_channels_email_account_id_email_accounts"),
            "email_accounts",
            ["email_account_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_index(
            batch_op.f("ix_push_channels_email_account_id"),
            ["email_account_id"],
            unique=False,
        )
        batch_op.create_check_constraint(
            batch_op.f("ck_push_channels_one_owner"), ONE_OWNER
        )
    for table in ACCOUNT_TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column(
                    "sync_pushed",
                    sa.Boolean(),
                    nullable=False,
                    server_default=sa.false(),
                )
            )


def downgrade() -> None:
    for table in ACCOUNT_TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("sync_pushed")
    op.execute("DELETE FROM push_channels WHERE calendar_account_id IS NULL")
    with op.batch_alter_table("push_channels", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("ck_push_channels_one_owner"), type_="check"
        )
        batch_op.drop_index(batch_op.f("ix_push_channels_email_account_id"))
        batch_op.drop_constraint(
            batch_op.f("fk_push_channels_email_account_id_email_accounts"),
            type_="foreignkey",
        )
        batch_op.drop_column("recent")
        batch_op.drop_column("email_account_id")
        batch_op.alter_column(
            "calendar_account_id", existing_type=sa.Uuid(), nullable=False
        )
