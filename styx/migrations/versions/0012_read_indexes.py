"""Indexes the read side needs at a thousand clusters and ten thousand jobs (issue 10).

- ``ix_clusters_status``: the listing keeps to live clusters (``styx status`` without ``-a``)
  and filters by status, while TERMINATED rows pile up with time.
- ``ix_jobs_cluster_name_status``: a cluster's unfinished jobs (the listing's job counts,
  one grouped query for a whole page of clusters; ``list_jobs(cluster, status=...)``).
- ``ix_jobs_cluster_name_submitted_at``: a cluster's queue, newest first, read in index order
  instead of sorting all its jobs (only jobs submitted at the same instant are sorted).

Revision ID: 0012_read_indexes
Revises: 0011_job_specs
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0012_read_indexes"
down_revision: str | None = "0011_job_specs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_clusters_status", "clusters", ["status"])
    op.create_index("ix_jobs_cluster_name_status", "jobs", ["cluster_name", "status"])
    op.create_index("ix_jobs_cluster_name_submitted_at", "jobs", ["cluster_name", "submitted_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_cluster_name_submitted_at", table_name="jobs")
    op.drop_index("ix_jobs_cluster_name_status", table_name="jobs")
    op.drop_index("ix_clusters_status", table_name="clusters")
