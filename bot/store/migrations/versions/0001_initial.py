"""Channels, characters, turns, exact states and the initial-state cache.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)

# What a downgrade past this revision deletes (`rwkv-bot db downgrade` shows it and asks for --yes).
downgrade_loses = {
    "channels": "every conversation's settings and character",
    "turns": "every conversation's history",
    "states": "the stored model states",
    "characters": "the character library, imported cards included",
    "initial_states": "cached character prompts (rebuilt on demand)",
}


def upgrade() -> None:
    op.create_table(
        "channels",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("external_id", sa.String(128), nullable=False),
        sa.Column("character", sa.String(64)),
        sa.Column("greeting_index", sa.Integer, nullable=False),
        sa.Column("user_label", sa.String(128), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("chat_format", sa.String(32), nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("head", sa.Integer, nullable=False),
        sa.Column("base_position", sa.Integer, nullable=False),
        sa.Column("created", TS, nullable=False),
        sa.Column("updated", TS, nullable=False),
        sa.UniqueConstraint("platform", "external_id", name="uq_channel_platform_external"),
    )
    op.create_table(
        "characters",
        sa.Column("content_hash", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("source_format", sa.String(32), nullable=False),
        sa.Column("card", sa.JSON, nullable=False),
        sa.Column("filename", sa.String(256), nullable=False),
        sa.Column("raw", sa.LargeBinary, nullable=False),
        sa.Column("avatar", sa.LargeBinary),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("created", TS, nullable=False),
    )
    op.create_table(
        "turns",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("channel_id", sa.Integer, sa.ForeignKey("channels.id", ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("in_speaker", sa.String(128)),
        sa.Column("in_text", sa.Text),
        sa.Column("out_speaker", sa.String(128), nullable=False),
        sa.Column("out_text", sa.Text, nullable=False),
        sa.Column("fed", sa.LargeBinary, nullable=False),
        sa.Column("prompt_len", sa.Integer, nullable=False),
        sa.Column("feed_lengths", sa.JSON, nullable=False),
        sa.Column("created", TS, nullable=False),
        sa.UniqueConstraint("channel_id", "position", name="uq_turn_position"),
    )
    op.create_index("ix_turns_channel_id", "turns", ["channel_id"])
    op.create_table(
        "states",
        sa.Column("channel_id", sa.Integer, sa.ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("pinned", sa.Boolean, nullable=False),
        sa.Column("tokens", sa.Integer, nullable=False),
        sa.Column("header", sa.JSON, nullable=False),
        sa.Column("blob", sa.LargeBinary, nullable=False),
        sa.Column("created", TS, nullable=False),
    )
    op.create_table(
        "initial_states",
        sa.Column("prompt_hash", sa.String(64), primary_key=True),
        sa.Column("fingerprint", sa.String(64), primary_key=True),
        sa.Column("character", sa.String(64), nullable=False),
        sa.Column("tokens", sa.Integer, nullable=False),
        sa.Column("header", sa.JSON, nullable=False),
        sa.Column("blob", sa.LargeBinary, nullable=False),
        sa.Column("created", TS, nullable=False),
    )
    op.create_index("ix_initial_states_character", "initial_states", ["character"])


def downgrade() -> None:
    op.drop_index("ix_initial_states_character", table_name="initial_states")
    op.drop_table("initial_states")
    op.drop_table("states")
    op.drop_index("ix_turns_channel_id", table_name="turns")
    op.drop_table("turns")
    op.drop_table("characters")
    op.drop_table("channels")
