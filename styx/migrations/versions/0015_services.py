"""Services (``styx serve``): the service, its versions, its replicas, the load balancers'
request counts and log lines.

Revision ID: 0015_services
Revises: 0016_push_intents
Create Date: 2026-12-10
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0015_services"
down_revision: str | None = "0016_push_intents"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "services",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("target_version", sa.Integer(), nullable=False),
        sa.Column("target_replicas", sa.Integer(), nullable=False),
        sa.Column("lb_port", sa.Integer(), nullable=False),
        sa.Column("lb_policy", sa.String(32), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("qps", sa.Float(), nullable=False),
        sa.Column("workflow_id", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_services"),
        sa.UniqueConstraint("lb_port", name="uq_services_lb_port"),
    )
    op.create_index("ix_services_owner", "services", ["owner"])
    op.create_table(
        "service_versions",
        sa.Column("service_name", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("task", sa.Text(), nullable=False),
        sa.Column("sealed_secrets", sa.Text(), nullable=True),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("service_name", "version", name="pk_service_versions"),
    )
    op.create_table(
        "service_replicas",
        sa.Column("service_name", sa.String(64), nullable=False),
        sa.Column("replica_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("cluster", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("endpoint", sa.String(255), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("launched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("service_name", "replica_id", name="pk_service_replicas"),
    )
    op.create_table(
        "service_requests",
        sa.Column("service_name", sa.String(64), nullable=False),
        sa.Column("lb_id", sa.String(64), nullable=False),
        sa.Column("second", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("service_name", "lb_id", "second", name="pk_service_requests"),
    )
    op.create_table(
        "service_lb_logs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("service_name", sa.String(64), nullable=False),
        sa.Column("lb_id", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_service_lb_logs"),
    )
    op.create_index("ix_service_lb_logs_service_name", "service_lb_logs", ["service_name"])


def downgrade() -> None:
    op.drop_index("ix_service_lb_logs_service_name", "service_lb_logs")
    op.drop_table("service_lb_logs")
    op.drop_table("service_requests")
    op.drop_table("service_replicas")
    op.drop_table("service_versions")
    op.drop_index("ix_services_owner", "services")
    op.drop_table("services")
