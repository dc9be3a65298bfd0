"""Upload pins: which live work (a queued or running job, a service, a managed job) names an
upload, so that the per-user upload quota never evicts one that work still needs; and an index
of jobs by spec id, which tells whether a job spec's pins still hold.

Revision ID: 0018_upload_pins
Revises: 0013_managed_jobs
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018_upload_pins"
down_revision: str | None = "0013_managed_jobs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "upload_pins",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("holder_kind", sa.String(16), nullable=False),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256", "holder_kind", "holder", name="pk_upload_pins"),
    )
    op.create_index("ix_upload_pins_holder", "upload_pins", ["holder_kind", "holder"])
    op.create_index("ix_jobs_spec_id", "jobs", ["spec_id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_spec_id", table_name="jobs")
    op.drop_index("ix_upload_pins_holder", table_name="upload_pins")
    op.drop_table("upload_pins")
