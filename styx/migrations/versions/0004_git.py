"""The git server: repositories, collaborators, SSH keys and push-triggered runs.

Revision ID: 0004_git
Revises: 0003_users_tokens
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_git"
down_revision: str | None = "0003_users_tokens"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "repos",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("private", sa.Boolean(), nullable=False),
        sa.Column("default_branch", sa.String(255), nullable=False),
        sa.Column("description", sa.String(500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_repos"),
        sa.UniqueConstraint("owner", "name", name="uq_repos_owner_name"),
        sa.ForeignKeyConstraint(["owner"], ["users.name"], ondelete="CASCADE",
                                name="fk_repos_owner_users"),
    )
    op.create_table(
        "repo_collaborators",
        sa.Column("repo_id", sa.Integer(), nullable=False),
        sa.Column("user_name", sa.String(64), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("repo_id", "user_name", name="pk_repo_collaborators"),
        sa.ForeignKeyConstraint(["repo_id"], ["repos.id"], ondelete="CASCADE",
                                name="fk_repo_collaborators_repo_id_repos"),
        sa.ForeignKeyConstraint(["user_name"], ["users.name"], ondelete="CASCADE",
                                name="fk_repo_collaborators_user_name_users"),
    )
    op.create_table(
        "ssh_keys",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_name", sa.String(64), nullable=False),
        sa.Column("fingerprint", sa.String(128), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("title", sa.String(255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ssh_keys"),
        sa.UniqueConstraint("fingerprint", name="uq_ssh_keys_fingerprint"),
        sa.ForeignKeyConstraint(["user_name"], ["users.name"], ondelete="CASCADE",
                                name="fk_ssh_keys_user_name_users"),
    )
    op.create_index("ix_ssh_keys_user_name", "ssh_keys", ["user_name"])
    op.create_table(
        "push_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("repo_id", sa.Integer(), nullable=False),
        sa.Column("sha", sa.String(64), nullable=False),
        sa.Column("ref", sa.String(255), nullable=False),
        sa.Column("pusher", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("workflow_id", sa.String(255), nullable=False),
        sa.Column("jobs", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_push_runs"),
        sa.UniqueConstraint("repo_id", "sha", name="uq_push_runs_repo_id_sha"),
        sa.ForeignKeyConstraint(["repo_id"], ["repos.id"], ondelete="CASCADE",
                                name="fk_push_runs_repo_id_repos"),
    )


def downgrade() -> None:
    op.drop_table("push_runs")
    op.drop_index("ix_ssh_keys_user_name", table_name="ssh_keys")
    op.drop_table("ssh_keys")
    op.drop_table("repo_collaborators")
    op.drop_table("repos")
