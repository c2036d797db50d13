"""The operators' command line, run as a subprocess with an explicit environment:
`python -m webapp migrate | create-user | check`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from tests.helpers import PASSWORD, ROOT, migration_head
from tests.live import base_env, postgres_database
from webapp.db import normalize_database_url
from webapp.domain.passwords import verify_password_sync as verify_password
from webapp.migrate import check_no_drift, pending_revisions, upgrade_to_head

PRODUCTION_KEY = "a-production-secret-key-that-is-long-enough-0123456789"


def webapp(*args: str, env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webapp", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all, of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    with postgres_database("webapp_cli") as url:
        yield url


@pytest.fixture
def migrated_database(empty_database: str) -> str:
    upgrade_to_head(empty_database)
    return empty_database


def _rows(database_url: str, sql: str) -> list[tuple[object, ...]]:
    engine = create_engine(normalize_database_url(database_url))
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(sql))]
    finally:
        engine.dispose()


# -- migrate --------------------------------------------------------------------------


def test_migrate_brings_an_empty_database_to_head_without_drift(empty_database):
    assert pending_revisions(empty_database) == [migration_head()]
    result = webapp("migrate", env=base_env(empty_database))
    assert result.returncode == 0, result.stderr
    assert "newest schema" in result.stdout
    assert pending_revisions(empty_database) == []
    # `alembic check`: the models and the migrated schema agree on this backend.
    check_no_drift(empty_database)
    engine = create_engine(normalize_database_url(empty_database))
    try:
        assert {"users", "user_sessions", "signin_failures"} <= set(
            inspect(engine).get_table_names()
        )
    finally:
        engine.dispose()
    again = webapp("migrate", env=base_env(empty_database))
    assert again.returncode == 0, again.stderr


def test_migrate_takes_a_postgres_url_as_platforms_hand_it_out():
    with postgres_database("webapp_cli") as url:
        platform_url = url.replace("postgresql+psycopg://", "postgres://", 1)
        assert platform_url.startswith("postgres://")
        result = webapp("migrate", env=base_env(platform_url))
        assert result.returncode == 0, result.stderr
        assert pending_revisions(url) == []


# -- create-user ------------------------------------------------------------------------


def test_create_user_reads_the_password_from_stdin(migrated_database):
    result = webapp(
        "create-user",
        "--username",
        "Admin",
        "--email",
        "admin@Example.COM",
        "--password-stdin",
        env=base_env(migrated_database),
        stdin=PASSWORD + "\n",
    )
    assert result.returncode == 0, result.stderr
    assert "created user Admin" in result.stdout
    assert PASSWORD not in result.stdout + result.stderr
    [(username, email, password_hash)] = _rows(
        migrated_database, "SELECT username, email, password_hash FROM users"
    )
    assert (username, email) == ("Admin", "admin@example.com")
    assert verify_password(PASSWORD, password_hash=str(password_hash))


@pytest.mark.parametrize(
    ("username", "email", "password", "field"),
    [
        ("1nvalid", "someone@example.com", PASSWORD, "username"),
        ("someone", "not-an-address", PASSWORD, "email"),
        ("someone", "someone@example.com", "short", "password"),
    ],
)
def test_create_user_refuses_invalid_input_and_names_the_field(
    migrated_database, username, email, password, field
):
    result = webapp(
        "create-user",
        "--username",
        username,
        "--email",
        email,
        "--password-stdin",
        env=base_env(migrated_database),
        stdin=password + "\n",
    )
    assert result.returncode != 0
    assert result.stderr.startswith(f"{field}: "), result.stderr
    assert "Traceback" not in result.stderr
    assert _rows(migrated_database, "SELECT count(*) FROM users") == [(0,)]


def test_create_user_refuses_a_taken_name_whatever_its_case(migrated_database):
    env = base_env(migrated_database)
    first = ["create-user", "--username", "admin", "--email", "a@example.com", "--password-stdin"]
    assert webapp(*first, env=env, stdin=PASSWORD).returncode == 0
    result = webapp(
        "create-user",
        "--username",
        "ADMIN",
        "--email",
        "b@example.com",
        "--password-stdin",
        env=env,
        stdin=PASSWORD,
    )
    assert result.returncode != 0
    assert "username: That username is taken." in result.stderr
    assert _rows(migrated_database, "SELECT count(*) FROM users") == [(1,)]


def test_create_user_on_an_unmigrated_database_says_so_in_one_line(empty_database):
    env = base_env(empty_database)
    args = ["create-user", "--username", "admin", "--email", "a@example.com", "--password-stdin"]
    result = webapp(*args, env=env, stdin=PASSWORD)
    assert result.returncode != 0
    assert "migrate" in result.stderr
    assert "Traceback" not in result.stderr


# -- check ------------------------------------------------------------------------------


def test_check_lists_every_problem_of_a_development_configuration(tmp_path):
    env = base_env(f"sqlite:///{tmp_path / 'dev.db'}", APP_ENV="development")
    result = webapp("check", env=env)
    assert result.returncode == 1
    problems = [line for line in result.stderr.splitlines() if line.startswith("problem: ")]
    assert any("APP_ENV is not 'production'" in line for line in problems), result.stderr
    assert any("SQLite" in line for line in problems), result.stderr
    assert any("BCRYPT_ROUNDS" in line for line in problems), result.stderr
    assert any("migrations" in line for line in problems), result.stderr
    assert "ready for production" not in result.stdout


def test_check_refuses_a_short_production_key_without_showing_it(tmp_path):
    env = base_env(f"sqlite:///{tmp_path / 'x.db'}", APP_ENV="production", SECRET_KEY="too-short")
    result = webapp("check", env=env)
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr
    assert "too-short" not in result.stderr


def test_check_reports_an_unreachable_database(tmp_path):
    # Nothing listens on port 9 of loopback: the connection is refused at once.
    url = "postgres://admin:hunter2hunter2@127.0.0.1:9/absent"
    env = base_env(url, APP_ENV="production", SECRET_KEY=PRODUCTION_KEY, BCRYPT_ROUNDS="12")
    result = webapp("check", env=env)
    assert result.returncode == 1
    assert "the database does not answer (OperationalError)" in result.stderr
    assert "Traceback" not in result.stderr
    assert "hunter2" not in result.stdout + result.stderr


def test_check_passes_a_good_production_configuration_at_head():
    with postgres_database("webapp_cli") as url:
        platform_url = url.replace("postgresql+psycopg://", "postgres://", 1)
        env = base_env(
            platform_url,
            APP_ENV="production",
            SECRET_KEY=PRODUCTION_KEY,
            BCRYPT_ROUNDS="12",
            MAIL_URL="smtp+starttls://mailer:secret@smtp.example.com:587",
            PUBLIC_URL="https://accounts.example.com",
        )
        unmigrated = webapp("check", env=env)
        assert unmigrated.returncode == 1
        assert f"lacks migrations {migration_head()}" in unmigrated.stderr
        assert webapp("migrate", env=env).returncode == 0
        result = webapp("check", env=env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "configuration is ready for production"
        assert result.stderr == ""
