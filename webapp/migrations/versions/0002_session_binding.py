"""session lifetime and credential binding: credential versions, absolute ends, remember
tokens, last-seen times and public session handles

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("credential_version", sa.Integer(), nullable=False, server_default="1")
        )
    # Sessions from before this revision have no credential binding or handle: they end,
    # and everyone signs in once more.
    op.execute("DELETE FROM user_sessions")
    with op.batch_alter_table("user_sessions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("public_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False)
        )
        batch_op.add_column(
            sa.Column("last_seen_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False)
        )
        batch_op.add_column(
            sa.Column("credential_version", sa.Integer(), nullable=False, server_default="1")
        )
        batch_op.add_column(
            sa.Column("remember_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )
        batch_op.add_column(
            sa.Column(
                "remember_prev_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True
            )
        )
        batch_op.create_index(batch_op.f("ix_user_sessions_public_id"), ["public_id"], unique=False)
        batch_op.create_unique_constraint(
            batch_op.f("uq_user_sessions_remember_hash"), ["remember_hash"]
        )
        batch_op.create_unique_constraint(
            batch_op.f("uq_user_sessions_remember_prev_hash"), ["remember_prev_hash"]
        )


def downgrade() -> None:
    with op.batch_alter_table("user_sessions", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_user_sessions_remember_prev_hash"), type_="unique")
        batch_op.drop_constraint(batch_op.f("uq_user_sessions_remember_hash"), type_="unique")
        batch_op.drop_index(batch_op.f("ix_user_sessions_public_id"))
        batch_op.drop_column("remember_prev_hash")
        batch_op.drop_column("remember_hash")
        batch_op.drop_column("credential_version")
        batch_op.drop_column("last_seen_at")
        batch_op.drop_column("public_id")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("credential_version")
