"""Cost and autostop: what a cluster's nodes cost, when autostop fires, who stopped it, and
every node's intervals up (``node_uptime``), kept after the cluster is gone.

Revision ID: 0014_node_uptime
Revises: 0015_services
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_node_uptime"
down_revision: str | None = "0015_services"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMNs (no batch): SQLite's table rebuild would cascade-delete the nodes.
    op.add_column("clusters", sa.Column("instance_type", sa.String(64), nullable=True))
    op.add_column("clusters", sa.Column("use_spot", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column("clusters", sa.Column("hourly_price", sa.Float(), nullable=True))
    op.add_column("clusters", sa.Column("autostop_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("clusters", sa.Column("stopped_by", sa.String(16), nullable=True))
    op.add_column("clusters", sa.Column("launch_id", sa.String(64), nullable=True))
    op.create_table(
        "node_uptime",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cluster_name", sa.String(255), nullable=False),
        sa.Column("launch_id", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("instance_type", sa.String(64), nullable=True),
        sa.Column("region", sa.String(64), nullable=True),
        sa.Column("zone", sa.String(64), nullable=True),
        sa.Column("use_spot", sa.Boolean(), nullable=False),
        sa.Column("hourly_price", sa.Float(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_node_uptime"),
    )
    op.create_index("ix_node_uptime_cluster_name", "node_uptime", ["cluster_name"])
    op.create_index("ix_node_uptime_owner", "node_uptime", ["owner"])
    op.create_index("ix_node_uptime_ended_at", "node_uptime", ["ended_at"])


def downgrade() -> None:
    op.drop_index("ix_node_uptime_ended_at", "node_uptime")
    op.drop_index("ix_node_uptime_owner", "node_uptime")
    op.drop_index("ix_node_uptime_cluster_name", "node_uptime")
    op.drop_table("node_uptime")
    with op.batch_alter_table("clusters") as batch:
        for column in ("launch_id", "stopped_by", "autostop_at", "hourly_price", "use_spot", "instance_type"):
            batch.drop_column(column)
