"""Owners and sharing of clusters; token expiry and last use; disabled users.

- ``clusters.owner``: the user who launched it (NULL on rows from before: the admins').
- ``cluster_shares``: who else may use a cluster (one row per cluster and user).
- ``api_tokens.expires_at`` (NULL: never) and ``api_tokens.last_used_at``.
- ``users.disabled``: a disabled user's tokens and SSH keys stop working.

Revision ID: 0005_owners
Revises: 0004_git
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_owners"
down_revision: str | None = "0004_git"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("clusters") as batch:
        batch.add_column(sa.Column("owner", sa.String(64), nullable=True))
    op.create_index("ix_clusters_owner", "clusters", ["owner"])
    op.create_table(
        "cluster_shares",
        sa.Column("cluster_name", sa.String(255), nullable=False),
        sa.Column("user_name", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("cluster_name", "user_name", name="pk_cluster_shares"),
        sa.ForeignKeyConstraint(["cluster_name"], ["clusters.name"], ondelete="CASCADE",
                                name="fk_cluster_shares_cluster_name_clusters"),
        sa.ForeignKeyConstraint(["user_name"], ["users.name"], ondelete="CASCADE",
                                name="fk_cluster_shares_user_name_users"),
    )
    op.create_index("ix_cluster_shares_user_name", "cluster_shares", ["user_name"])
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_api_tokens_user_name", "api_tokens", ["user_name"])
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("disabled")
    op.drop_index("ix_api_tokens_user_name", table_name="api_tokens")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("last_used_at")
        batch.drop_column("expires_at")
    op.drop_index("ix_cluster_shares_user_name", table_name="cluster_shares")
    op.drop_table("cluster_shares")
    op.drop_index("ix_clusters_owner", table_name="clusters")
    with op.batch_alter_table("clusters") as batch:
        batch.drop_column("owner")
