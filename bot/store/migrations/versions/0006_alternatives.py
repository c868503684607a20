"""Swipes: the alternatives of a character's reply (each with the tokens it fed, so its exact state can be
rebuilt), and which one the turn shows. The turn row always holds the chosen alternative, so everything that reads
turns (replay, export, saves) reads the one on screen.

Revision ID: 0006
Revises: 0003
Create Date: 2026-12-03
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0003"
branch_labels = None
depends_on = None

# What a downgrade past this revision deletes (`rwkv-bot db downgrade` shows it and asks for --yes).
downgrade_loses = {"alternatives": "the alternatives of each reply (swipes); the chosen ones stay as the turns"}


def upgrade() -> None:
    op.create_table(
        "alternatives",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("turn_id", sa.Integer, sa.ForeignKey("turns.id", ondelete="CASCADE"), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("chosen", sa.Boolean, nullable=False),
        sa.Column("out_text", sa.Text, nullable=False),
        sa.Column("fed", sa.LargeBinary, nullable=False),
        sa.Column("prompt_len", sa.Integer, nullable=False),
        sa.Column("feed_lengths", sa.JSON, nullable=False),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("turn_id", "number", name="uq_alternative_number"),
    )
    op.create_index("ix_alternatives_turn_id", "alternatives", ["turn_id"])


def downgrade() -> None:
    op.drop_index("ix_alternatives_turn_id", table_name="alternatives")
    op.drop_table("alternatives")
