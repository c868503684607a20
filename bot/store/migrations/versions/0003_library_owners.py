"""The character library as names (one name, one card; shared or one user's own), and who owns saves and who
started each channel (for quotas).

Every card already in the database becomes a shared-library name; where several cards had the same name (an
edited file, or an import that shadowed it), the newest keeps the name and the others stay unlisted for the
channels and saves that use them. A downgrade forgets who owns what: so that no one's own card becomes
everyone's (the old schema lists every stored card), cards outside the shared library are deleted with it.

Revision ID: 0003
Revises: 0005
Create Date: 2026-11-27
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0005"  # merged after main's 0005 (audit log); the brief gave "0002"
branch_labels = None
depends_on = None

NAME_KEY_CHARS = 256

# What a downgrade past this revision deletes (`rwkv-bot db downgrade` shows it and asks for --yes).
downgrade_loses = {"library": "who owns which card, and users' own cards and deleted cards (the old schema "
                              "would list them for everyone)", "saves.owner": "who made each save",
                   "channels.started_by": "who started each channel"}


def upgrade() -> None:
    op.create_table(
        "library",
        sa.Column("name_key", sa.String(NAME_KEY_CHARS), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("content_hash", sa.String(64), sa.ForeignKey("characters.content_hash", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("owner", sa.String(160)),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_library_content_hash", "library", ["content_hash"])
    op.create_index("ix_library_owner", "library", ["owner"])
    with op.batch_alter_table("channels") as batch:
        batch.add_column(sa.Column("started_by", sa.String(160)))
        batch.create_index("ix_channels_started_by", ["started_by"])
    with op.batch_alter_table("saves") as batch:
        batch.add_column(sa.Column("owner", sa.String(160)))
        batch.create_index("ix_saves_owner", ["owner"])

    conn = op.get_bind()
    characters = sa.table("characters", sa.column("content_hash"), sa.column("name"), sa.column("created"))
    newest: dict[str, tuple] = {}
    for content_hash, name, created in conn.execute(
            sa.select(characters.c.content_hash, characters.c.name, characters.c.created)
            .order_by(characters.c.created, characters.c.content_hash)):
        newest[name.casefold()[:NAME_KEY_CHARS]] = (name, content_hash, created)
    library = sa.table("library", sa.column("name_key"), sa.column("name"), sa.column("content_hash"),
                       sa.column("owner"), sa.column("created"))
    if newest:
        op.bulk_insert(library, [{"name_key": key, "name": name, "content_hash": content_hash, "owner": None,
                                  "created": created} for key, (name, content_hash, created) in newest.items()])


def downgrade() -> None:
    conn = op.get_bind()
    for table, column in (("initial_states", "character"), ("characters", "content_hash")):
        conn.execute(sa.text(f'DELETE FROM {table} WHERE "{column}" NOT IN '
                             "(SELECT content_hash FROM library WHERE owner IS NULL)"))
    with op.batch_alter_table("saves") as batch:
        batch.drop_index("ix_saves_owner")
        batch.drop_column("owner")
    with op.batch_alter_table("channels") as batch:
        batch.drop_index("ix_channels_started_by")
        batch.drop_column("started_by")
    op.drop_index("ix_library_owner", table_name="library")
    op.drop_index("ix_library_content_hash", table_name="library")
    op.drop_table("library")
