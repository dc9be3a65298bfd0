"""Per-user limits: how many live clusters, and how many nodes over them, a user may hold.

- ``users.max_clusters``, ``users.max_nodes``: set by an admin (``styx user limits``);
  NULL: the deployment's default applies (``STYX_DEFAULT_MAX_CLUSTERS`` / ``_NODES``).

Revision ID: 0010_user_limits
Revises: 0008_job_logs
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_user_limits"
down_revision: str | None = "0008_job_logs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("max_clusters", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_nodes", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("max_nodes")
        batch.drop_column("max_clusters")
