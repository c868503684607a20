"""Cluster mode (bot/cluster): the lease fences that keep two workers from writing one channel, and the events
workers have handled (a redelivery answers again instead of acting twice).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# What a downgrade past this revision deletes (`rwkv-bot db downgrade` shows it and asks for --yes).
downgrade_loses = {"cluster_fences": "which cluster worker holds each partition (rebuilt when workers start)",
                   "cluster_handled": "which events cluster workers have handled (for redeliveries)"}


def upgrade() -> None:
    op.create_table(
        "cluster_fences",
        sa.Column("partition", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.Column("worker", sa.String(128), nullable=False),
        sa.Column("taken", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "cluster_handled",
        sa.Column("key", sa.String(256), primary_key=True),
        sa.Column("answer", sa.JSON, nullable=False),
        sa.Column("handled", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_cluster_handled_handled", "cluster_handled", ["handled"])


def downgrade() -> None:
    op.drop_index("ix_cluster_handled_handled", table_name="cluster_handled")
    op.drop_table("cluster_handled")
    op.drop_table("cluster_fences")
