"""Configuration: one module, strict in production, friendly in development."""

from __future__ import annotations

import dataclasses
import logging
import re
import subprocess
import sys
import threading
import time

import pytest
from starlette.testclient import TestClient

from tests.helpers import ROOT
from webapp import settings as settings_module
from webapp.app import create_app
from webapp.db import normalize_database_url
from webapp.settings import ConfigurationError, Settings

GOOD_KEY = "kT3vQ9xW2mZ8pL5rN7bJ4hF6dS1aG0yC"


def test_production_refuses_a_missing_key():
    with pytest.raises(ConfigurationError, match="SECRET_KEY"):
        Settings.from_environment({"APP_ENV": "production"})


def test_production_refuses_a_short_key():
    with pytest.raises(ConfigurationError, match="SECRET_KEY"):
        Settings.from_environment({"APP_ENV": "production", "SECRET_KEY": "short"})


def test_start_up_stops_with_one_clear_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", "import webapp.app"],
        cwd=ROOT,
        env={"APP_ENV": "production", "SECRET_KEY": "too-short", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "SECRET_KEY" in lines[0]
    assert "too-short" not in result.stderr


def test_production_on_sqlite_stops_at_start_up_with_one_clear_line():
    result = subprocess.run(
        [sys.executable, "-c", "import webapp.app"],
        cwd=ROOT,
        env={"APP_ENV": "production", "SECRET_KEY": GOOD_KEY, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "SQLite" in lines[0]
    assert "ALLOW_SQLITE_IN_PRODUCTION" in lines[0]


def test_production_on_sqlite_runs_when_explicitly_allowed_and_warns(tmp_path, caplog):
    settings = Settings(
        app_env="production",
        secret_key=GOOD_KEY,
        database_url=f"sqlite:///{tmp_path / 'lasting.db'}",
        allow_sqlite_in_production=True,
        auto_migrate=True,
    )
    with pytest.raises(ConfigurationError, match="SQLite"):
        create_app(dataclasses.replace(settings, allow_sqlite_in_production=False))
    app = create_app(settings)
    try:
        with caplog.at_level(logging.WARNING, logger="webapp"), TestClient(app) as client:
            assert client.get("/healthz").json() == {"status": "ok"}
    finally:
        app.state.services.db.dispose()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("SQLite" in message for message in warnings), warnings


def test_development_generates_a_key_once_and_keeps_it(tmp_path, monkeypatch):
    key_file = tmp_path / ".secret_key"
    monkeypatch.setattr(settings_module, "DEV_SECRET_FILE", key_file)
    first = Settings.from_environment({"APP_ENV": "development"})
    second = Settings.from_environment({"APP_ENV": "development"})
    assert first.secret_key == second.secret_key
    assert len(first.secret_key) >= 32
    assert key_file.stat().st_mode & 0o777 == 0o600


def test_the_secret_never_shows_in_repr():
    settings = Settings(secret_key=GOOD_KEY)
    assert GOOD_KEY not in repr(settings)


def test_settings_are_read_from_the_environment():
    settings = Settings.from_environment(
        {
            "SECRET_KEY": GOOD_KEY,
            "APP_ENV": "test",
            "BCRYPT_ROUNDS": "5",
            "PASSWORD_MIN_LENGTH": "10",
            "JWT_ALGORITHM": "HS512",
            "JWT_ISSUER": "me",
            "JWT_AUDIENCE": "them",
            "FORWARDED_ALLOW_IPS": "10.0.0.1, 10.0.0.2",
            "DATABASE_URL": "postgres://u@h/db",
        }
    )
    assert settings.bcrypt_rounds == 5
    assert settings.password_min_length == 10
    assert settings.jwt_algorithm == "HS512"
    assert (settings.jwt_issuer, settings.jwt_audience) == ("me", "them")
    assert settings.forwarded_allow_ips == ("10.0.0.1", "10.0.0.2")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("JWT_ALGORITHM", "none"),
        ("JWT_ALGORITHM", "RS256"),
        ("BCRYPT_ROUNDS", "2"),
        ("BCRYPT_ROUNDS", "x"),
    ],
)
def test_bad_values_are_refused_with_the_key_named(name, value):
    with pytest.raises(ConfigurationError, match=name):
        Settings.from_environment({"SECRET_KEY": GOOD_KEY, name: value})


def test_production_problems_name_sqlite():
    settings = Settings(app_env="production", secret_key=GOOD_KEY, database_url="sqlite:///x.db")
    assert any("SQLite" in problem for problem in settings.production_problems())


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u:p@h:5432/d", "postgresql+psycopg://u:p@h:5432/d"),
        ("postgresql://u@h/d", "postgresql+psycopg://u@h/d"),
        ("postgresql+psycopg://u@h/d", "postgresql+psycopg://u@h/d"),
        ("sqlite:///x.db", "sqlite:///x.db"),
    ],
)
def test_database_urls_of_every_form(url, expected):
    assert normalize_database_url(url) == expected


def test_env_example_documents_every_setting():
    source = (ROOT / "webapp/settings.py").read_text()
    read = set(re.findall(r'config\(\s*"([A-Z_]+)"', source))
    documented = set(re.findall(r"^#?\s*([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert read, "found no settings in settings.py"
    assert read <= documented, read - documented


def test_a_worker_waits_for_the_key_another_worker_is_writing(tmp_path, monkeypatch):
    key_file = tmp_path / ".secret_key"
    key_file.write_text("")  # created by another worker, not yet written
    monkeypatch.setattr(settings_module, "DEV_SECRET_FILE", key_file)

    def write_soon() -> None:
        time.sleep(0.05)
        key_file.write_text("k" * 48 + "\n")

    writer = threading.Thread(target=write_soon)
    writer.start()
    settings = Settings.from_environment({"APP_ENV": "development"})
    writer.join()
    assert settings.secret_key == "k" * 48


def test_production_check_asks_for_mail_and_public_url():
    settings = Settings.from_environment(
        {"APP_ENV": "production", "SECRET_KEY": GOOD_KEY, "DATABASE_URL": "postgresql://u@h/d"}
    )
    problems = " ".join(settings.production_problems())
    assert "PUBLIC_URL is not set" in problems
    assert "MAIL_URL is not set" in problems
    configured = Settings.from_environment(
        {
            "APP_ENV": "production",
            "SECRET_KEY": GOOD_KEY,
            "DATABASE_URL": "postgresql://u@h/d",
            "MAIL_URL": "smtps://u:p@smtp.example.com:465",
            "PUBLIC_URL": "https://accounts.example.com/",
        }
    )
    assert configured.production_problems() == []
    assert configured.public_url == "https://accounts.example.com"
    # Development needs neither: mail goes to the log, links to localhost.
    development = Settings.from_environment({"SECRET_KEY": GOOD_KEY})
    assert development.mail_url == "console:"
    assert development.public_url == "http://localhost:8000"
