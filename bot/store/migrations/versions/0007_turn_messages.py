"""Which platform messages each turn came from and went to: the user's message that fed it (`in_message_id`) and
the bot's messages that show its reply (`out_message_ids`), so an edit or a delete on the platform can rewrite
the history.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"  # merged after swipes' 0006 (alternatives); the brief gave "0003"
branch_labels = None
depends_on = None

# What a downgrade past this revision deletes (`rwkv-bot db downgrade` shows it and asks for --yes).
downgrade_loses = {"turns.in_message_id": "which platform message fed each turn",
                   "turns.out_message_ids": "which bot messages show each reply"}


def upgrade() -> None:
    with op.batch_alter_table("turns") as batch:
        batch.add_column(sa.Column("in_message_id", sa.String(64)))
        batch.add_column(sa.Column("out_message_ids", sa.JSON))
        batch.create_index("ix_turns_channel_in_message", ["channel_id", "in_message_id"])


def downgrade() -> None:
    with op.batch_alter_table("turns") as batch:
        batch.drop_index("ix_turns_channel_in_message")
        batch.drop_column("out_message_ids")
        batch.drop_column("in_message_id")
