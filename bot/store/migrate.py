"""Alembic migrations, shipped inside the package (found with importlib.resources, so a non-editable install
can create and upgrade its database)."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from bot.libraries import missing_library
from bot.store.errors import StoreError, shown_url


def migrations_dir() -> Path:
    return Path(str(resources.files("bot.store") / "migrations"))


def alembic_config(url: str):
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade_database(url: str, revision: str = "head") -> None:
    from alembic import command

    import_driver(url)
    ensure_sqlite_dir(url)
    command.upgrade(alembic_config(url), revision)


def downgrade_database(url: str, revision: str) -> None:
    from alembic import command

    import_driver(url)
    command.downgrade(alembic_config(url), revision)


def import_driver(url: str) -> None:
    """Import the database driver the URL names (asyncpg for postgresql+asyncpg://): a missing one is
    MissingLibrary, a URL SQLAlchemy cannot read a StoreError."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        make_url(url).get_dialect().import_dbapi()
    except ModuleNotFoundError as error:
        raise missing_library(error, f"database.url {url.split(':', 1)[0]}://...") from None
    except NoSuchModuleError:
        raise StoreError(f"database.url {shown_url(url)}: unknown database kind (expected e.g. "
                         "sqlite+aiosqlite:///data/rwkv-bot.db or postgresql+asyncpg://user@host/db)") from None
    except ArgumentError:
        raise StoreError(f"database.url {url.split(':', 1)[0]}://...: not a database URL (expected e.g. "
                         "sqlite+aiosqlite:///data/rwkv-bot.db or postgresql+asyncpg://user@host/db)") from None


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for other databases and in-memory SQLite)."""
    if url.startswith("sqlite") and ":///" in url:
        path = url.split(":///", 1)[1].split("?")[0]
        if path and path != ":memory:":
            return Path(path)
    return None


def ensure_sqlite_dir(url: str) -> None:
    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def downgrade_steps(current: str | None, revision: str) -> list:
    """The migration scripts a downgrade from `current` to `revision` (an id, "-N" or "base") reverts, newest first."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    if current is None:
        return []
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    try:
        return [step.revision for step in script._downgrade_revs(revision, current)]  # what command.downgrade runs
    except CommandError as error:
        raise StoreError(f"cannot downgrade to {revision!r}: {error}") from None


def downgrade_losses(steps: list) -> list[tuple[str, str]]:
    """(table or "table.column", what it holds) for everything the steps delete, as each migration declares in
    `downgrade_loses`; a migration that declares nothing is named with ("", revision)."""
    losses = []
    for step in steps:
        declared = getattr(step.module, "downgrade_loses", None)
        if declared is None:
            losses.append(("", step.revision))
        else:
            losses += list(declared.items())
    return losses
