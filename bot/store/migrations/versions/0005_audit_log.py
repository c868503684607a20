"""The audit log (every admin change from any surface: platform commands, the admin web page) and each channel's
title as its platform shows it (for the admin page).

Revision ID: 0005
Revises: 0002
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0002"
branch_labels = None
depends_on = None

# What a downgrade past this revision deletes (`rwkv-bot db downgrade` shows it and asks for --yes).
downgrade_loses = {"audit_log": "the audit log of admin changes", "channels.title": "each channel's title"}


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.Column("surface", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("user_name", sa.String(128), nullable=False),
        sa.Column("channel", sa.String(192), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
    )
    op.create_index("ix_audit_log_created", "audit_log", ["created"])
    op.create_index("ix_audit_log_channel", "audit_log", ["channel"])
    with op.batch_alter_table("channels") as batch:
        batch.add_column(sa.Column("title", sa.String(256)))


def downgrade() -> None:
    with op.batch_alter_table("channels") as batch:
        batch.drop_column("title")
    op.drop_index("ix_audit_log_channel", table_name="audit_log")
    op.drop_index("ix_audit_log_created", table_name="audit_log")
    op.drop_table("audit_log")
