"""Alembic migrations, shipped inside the package (found with importlib.resources, so a non-editable install
can create and upgrade its database)."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from bot.libraries import missing_library


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
    """Import the database driver the URL names (asyncpg for postgresql+asyncpg://): a missing one is one line."""
    from sqlalchemy.engine import make_url

    try:
        make_url(url).get_dialect().import_dbapi()
    except ModuleNotFoundError as error:
        raise missing_library(error, f"database.url {url.split(':', 1)[0]}://...") from None


def ensure_sqlite_dir(url: str) -> None:
    if url.startswith("sqlite") and ":///" in url:
        path = url.split(":///", 1)[1].split("?")[0]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
