"""Alembic, driven from code: one configuration for the command line, the app and the tests."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from webapp.db import normalize_database_url

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser treats "%" specially; a password may contain one.
    config.set_main_option(
        "sqlalchemy.url", normalize_database_url(database_url).replace("%", "%%")
    )
    return config


def upgrade_to_head(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "head")


def check_no_drift(database_url: str) -> None:
    """Raise alembic.util.CommandError if the models differ from the migrated schema."""
    command.check(alembic_config(database_url))


def pending_revisions(database_url: str) -> list[str]:
    """The head revisions the database has not reached (empty when it is up to date)."""
    config = alembic_config(database_url)
    script = ScriptDirectory.from_config(config)
    engine = create_engine(normalize_database_url(database_url))
    try:
        with engine.connect() as connection:
            current = set(MigrationContext.configure(connection).get_current_heads())
    finally:
        engine.dispose()
    return sorted(set(script.get_heads()) - current)
