"""Alembic environment: models' metadata, the URL from the caller, a lock for concurrent starts."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, text
from sqlmodel import SQLModel

import webapp.models  # noqa: F401  (registers the tables on SQLModel.metadata)
from webapp.db import normalize_database_url

config = context.config
target_metadata = SQLModel.metadata
# Any 64-bit number, the same for every process: serialises concurrent upgrades.
ADVISORY_LOCK = 7_316_041_922


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = normalize_database_url(config.get_main_option("sqlalchemy.url") or "")
    engine = create_engine(url)
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            # Several workers or instances may start together: one migrates, the rest wait.
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK})
            connection.commit()
        elif connection.dialect.name == "sqlite":
            # Milliseconds: another process may be migrating the same file right now.
            connection.exec_driver_sql("PRAGMA busy_timeout=30000")
            connection.commit()
        try:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=True,
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
        finally:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK})
                connection.commit()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
