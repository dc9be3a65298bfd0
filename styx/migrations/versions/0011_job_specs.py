"""Job specs: a job's body (task, env, sealed secrets) in the database, so that workflows
carry its id only and a deep queue never grows a workflow's state or inputs.

- ``job_specs``: one row per submitted job body, by ``spec_id``.
- ``jobs.spec_id``: the body a job runs (NULL: queued with its task inline).

Revision ID: 0011_job_specs
Revises: 0014_node_uptime
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_job_specs"
down_revision: str | None = "0014_node_uptime"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_specs",
        sa.Column("spec_id", sa.String(64), nullable=False),
        sa.Column("cluster_name", sa.String(255), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("spec_id", name="pk_job_specs"),
    )
    op.create_index("ix_job_specs_cluster_name", "job_specs", ["cluster_name"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("spec_id", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("spec_id")
    op.drop_index("ix_job_specs_cluster_name", table_name="job_specs")
    op.drop_table("job_specs")
