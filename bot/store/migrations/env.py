"""Alembic environment: async URLs (aiosqlite, asyncpg); batch mode so ALTERs work on SQLite."""
import asyncio

from alembic import context
from sqlalchemy import func, inspect, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from bot.store.errors import StoreError
from bot.store.models import Base

target_metadata = Base.metadata


def adopt_unversioned_tables(connection) -> None:
    """Our tables without Alembic's version table can never be migrated ("table channels already exists" at every
    start). An older `rwkv-bot db check` made exactly that on a database that did not exist yet: its tables are
    empty, so they are dropped and the migrations make them. Tables holding rows are never touched."""
    names = set(inspect(connection).get_table_names())
    ours = [table for table in target_metadata.sorted_tables if table.name in names]
    if "alembic_version" in names or not ours:
        return
    if any(connection.execute(select(func.count()).select_from(table)).scalar() for table in ours):
        raise StoreError("the database has rwkv-bot's tables, with rows in them, but no migration version "
                         "(alembic_version): it cannot be migrated; move it aside or point database.url elsewhere")
    for table in reversed(ours):
        table.drop(connection)


MIGRATION_LOCK = 0x72776B76  # "rwkv": PostgreSQL advisory lock id, so processes starting at once migrate one by one


def run_migrations(connection) -> None:
    if connection.dialect.name == "postgresql":  # held until this transaction ends (several cluster workers)
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK})
    adopt_unversioned_tables(connection)
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def run_async() -> None:
    engine = create_async_engine(context.config.get_main_option("sqlalchemy.url"))
    async with engine.connect() as conn:
        await conn.run_sync(run_migrations)
        await conn.commit()
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=context.config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      render_as_batch=True, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(run_async())
