"""appointments: when a series' last occurrence ends

``series_end_at`` lets a range query pass over series that ended before the
range without expanding them. Appointments that do not repeat get their
``end_at``; existing series stay NULL ("maybe still going", which range
queries expand) until their next write works it out.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("appointments", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("series_end_at", sa.DateTime(timezone=True), nullable=True)
        )
    op.execute(
        "UPDATE appointments SET series_end_at = end_at"
        " WHERE recurrence_rule IS NULL AND CAST(recurrence AS TEXT) = '[]'"
    )


def downgrade() -> None:
    with op.batch_alter_table("appointments", schema=None) as batch_op:
        batch_op.drop_column("series_end_at")
