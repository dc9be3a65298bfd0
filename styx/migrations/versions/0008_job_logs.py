"""Job logs in the database: every worker host writes them and every API replica reads them
(they used to be files on the worker that ran the job).

Revision ID: 0008_job_logs
Revises: 0006_uploads
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_job_logs"
down_revision: str | None = "0006_uploads"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_logs",
        sa.Column("cluster_name", sa.String(255), nullable=False),
        sa.Column("job_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("rank", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("cluster_name", "job_id", "phase", "rank", name="pk_job_logs"),
    )
    op.create_table(
        "job_log_chunks",
        sa.Column("cluster_name", sa.String(255), nullable=False),
        sa.Column("job_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("rank", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("offset", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("cluster_name", "job_id", "phase", "rank", "offset", name="pk_job_log_chunks"),
    )


def downgrade() -> None:
    op.drop_table("job_log_chunks")
    op.drop_table("job_logs")
