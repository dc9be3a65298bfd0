"""Push intents: the ref updates pre-receive accepted, until their runs have started, so that a
git server killed between a ref update and post-receive loses no run.

Revision ID: 0016_push_intents
Revises: 0010_user_limits
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016_push_intents"
down_revision: str | None = "0010_user_limits"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "push_intents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repo_id", sa.Integer(), nullable=False),
        sa.Column("ref", sa.String(255), nullable=False),
        sa.Column("old", sa.String(64), nullable=False),
        sa.Column("new", sa.String(64), nullable=False),
        sa.Column("pusher", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["repo_id"], ["repos.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_push_intents_repo_id", "push_intents", ["repo_id"])


def downgrade() -> None:
    op.drop_index("ix_push_intents_repo_id", table_name="push_intents")
    op.drop_table("push_intents")
