"""Uploads: archives clients send for a task's workdir and file_mounts, stored in the database
so that every worker can read them.

Revision ID: 0006_uploads
Revises: 0005_owners
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_uploads"
down_revision: str | None = "0005_owners"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "uploads",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("chunks", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name="pk_uploads"),
    )
    op.create_table(
        "upload_chunks",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("sha256", "seq", name="pk_upload_chunks"),
        sa.ForeignKeyConstraint(["sha256"], ["uploads.sha256"], ondelete="CASCADE",
                                name="fk_upload_chunks_sha256_uploads"),
    )
    op.create_table(
        "upload_owners",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("user_name", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256", "user_name", name="pk_upload_owners"),
        sa.ForeignKeyConstraint(["sha256"], ["uploads.sha256"], ondelete="CASCADE",
                                name="fk_upload_owners_sha256_uploads"),
        sa.ForeignKeyConstraint(["user_name"], ["users.name"], ondelete="CASCADE",
                                name="fk_upload_owners_user_name_users"),
    )
    op.create_index("ix_upload_owners_user_name", "upload_owners", ["user_name"])


def downgrade() -> None:
    op.drop_index("ix_upload_owners_user_name", table_name="upload_owners")
    op.drop_table("upload_owners")
    op.drop_table("upload_chunks")
    op.drop_table("uploads")
