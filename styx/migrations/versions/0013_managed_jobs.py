"""Managed jobs: ``managed_jobs`` (one per job or pipeline), ``managed_job_tasks`` (each task's
sealed body and progress) and ``managed_job_attempts`` (one per cluster launched for a task).

Revision ID: 0013_managed_jobs
Revises: 0012_read_indexes
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_managed_jobs"
down_revision: str | None = "0012_read_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "managed_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("num_tasks", sa.Integer(), nullable=False),
        sa.Column("current_task", sa.Integer(), nullable=False),
        sa.Column("recoveries", sa.Integer(), nullable=False),
        sa.Column("cluster", sa.String(255), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("workflow_id", sa.String(255), nullable=False),
        sa.Column("idempotency_key", sa.String(64), nullable=True),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_managed_jobs"),
        sa.UniqueConstraint("owner", "idempotency_key", name="uq_managed_jobs_owner_idempotency_key"),
    )
    op.create_index("ix_managed_jobs_owner", "managed_jobs", ["owner"])
    op.create_index("ix_managed_jobs_status", "managed_jobs", ["status"])
    op.create_table(
        "managed_job_tasks",
        sa.Column("managed_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("task_index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("recoveries", sa.Integer(), nullable=False),
        sa.Column("restarts", sa.Integer(), nullable=False),
        sa.Column("cluster", sa.String(255), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("managed_id", "task_index", name="pk_managed_job_tasks"),
        sa.ForeignKeyConstraint(["managed_id"], ["managed_jobs.id"], ondelete="CASCADE",
                                name="fk_managed_job_tasks_managed_id_managed_jobs"),
    )
    op.create_table(
        "managed_job_attempts",
        sa.Column("managed_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("task_index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("attempt", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("cluster", sa.String(255), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("region", sa.String(64), nullable=True),
        sa.Column("zone", sa.String(64), nullable=True),
        sa.Column("hourly_price", sa.Float(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("managed_id", "task_index", "attempt", name="pk_managed_job_attempts"),
        sa.ForeignKeyConstraint(["managed_id"], ["managed_jobs.id"], ondelete="CASCADE",
                                name="fk_managed_job_attempts_managed_id_managed_jobs"),
    )


def downgrade() -> None:
    op.drop_table("managed_job_attempts")
    op.drop_table("managed_job_tasks")
    op.drop_index("ix_managed_jobs_status", table_name="managed_jobs")
    op.drop_index("ix_managed_jobs_owner", table_name="managed_jobs")
    op.drop_table("managed_jobs")
