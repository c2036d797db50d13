"""Migrations build the same schema on SQLite and PostgreSQL, with no drift from the models."""

from __future__ import annotations

from sqlalchemy import create_engine, inspect

from tests.helpers import migration_head
from webapp.db import normalize_database_url
from webapp.migrate import check_no_drift, pending_revisions, upgrade_to_head


def test_the_migrated_database_matches_the_models(database_url):
    # The session fixture already upgraded this database from empty to head.
    check_no_drift(database_url)
    assert pending_revisions(database_url) == []
    engine = create_engine(normalize_database_url(database_url))
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"users", "user_sessions", "signin_failures", "alembic_version"} <= tables


def test_upgrading_twice_is_harmless(database_url):
    upgrade_to_head(database_url)
    assert pending_revisions(database_url) == []


def test_an_empty_sqlite_database_upgrades_to_head(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert pending_revisions(url) == [migration_head()]
    upgrade_to_head(url)
    assert pending_revisions(url) == []
    check_no_drift(url)
