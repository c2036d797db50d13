"""The PaaS files agree with each other and with the app: Procfile, app.json,
requirements.txt, .python-version, and how uvicorn reads its environment."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import shlex

import pytest
import uvicorn
from anyio import to_thread
from starlette.testclient import TestClient
from uvicorn.main import main as uvicorn_command
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from tests.helpers import ROOT, make_settings
from webapp.app import create_app
from webapp.mail import parse_mail_url
from webapp.settings import ConfigurationError, Settings

# Heroku Postgres Essential plans allow 20 connections; keep two for release and one-offs.
ESSENTIAL_PLAN_CONNECTIONS = 20
SPARE_CONNECTIONS = 2


def _procfile() -> dict[str, list[str]]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    entries = [line.split(":", 1) for line in lines if line.strip() and not line.startswith("#")]
    return {name.strip(): shlex.split(command) for name, command in entries}


def _app_json() -> dict[str, object]:
    data: dict[str, object] = json.loads((ROOT / "app.json").read_text())
    return data


def _env_values() -> dict[str, str]:
    env = _app_json()["env"]
    assert isinstance(env, dict)
    return {name: spec["value"] for name, spec in env.items() if "value" in spec}


def test_the_release_phase_migrates():
    assert _procfile()["release"] == ["python", "-m", "webapp", "migrate"]


def test_the_web_process_binds_port_and_leaves_proxy_headers_to_the_app():
    web = _procfile()["web"]
    assert web[:2] == ["uvicorn", "webapp.app:app"]
    # Every interface of the dyno: the router connects from outside it.
    assert web[web.index("--host") + 1] == "0.0.0.0"  # noqa: S104
    assert web[web.index("--port") + 1] == "$PORT"
    # The app's TrustedProxyMiddleware reads X-Forwarded-*; uvicorn's would trust the left-most.
    assert "--no-proxy-headers" in web
    assert "--proxy-headers" not in web
    assert not any(arg.startswith("--forwarded-allow-ips") for arg in web)
    # Workers come from WEB_CONCURRENCY, which uvicorn reads itself.
    assert "--workers" not in web


def test_app_json_provisions_postgres_a_generated_key_and_production():
    manifest = _app_json()
    addons = manifest["addons"]
    assert isinstance(addons, list)
    plans = [addon if isinstance(addon, str) else addon["plan"] for addon in addons]
    assert any(plan.split(":")[0] == "heroku-postgresql" for plan in plans), plans
    env = manifest["env"]
    assert isinstance(env, dict)
    assert env["SECRET_KEY"] == {**env["SECRET_KEY"], "generator": "secret"}
    assert "value" not in env["SECRET_KEY"]
    values = _env_values()
    assert values["APP_ENV"] == "production"
    assert values["FORWARDED_ALLOW_IPS"] == "*"
    assert int(values["WEB_CONCURRENCY"]) >= 1
    assert manifest["buildpacks"] == [{"url": "heroku/python"}]


def test_app_json_sets_only_settings_that_something_reads():
    source = (ROOT / "webapp/settings.py").read_text()
    read = set(re.findall(r'config\(\s*"([A-Z_]+)"', source))
    env = _app_json()["env"]
    assert isinstance(env, dict)
    assert set(env) - read <= {"WEB_CONCURRENCY"}, set(env) - read


def test_app_json_fits_the_smallest_database_plan():
    values = _env_values()
    per_worker = int(values["DB_POOL_SIZE"]) + int(values["DB_MAX_OVERFLOW"])
    formation = _app_json()["formation"]
    assert isinstance(formation, dict)
    dynos = int(formation["web"]["quantity"])
    used = dynos * int(values["WEB_CONCURRENCY"]) * per_worker
    assert used + SPARE_CONNECTIONS <= ESSENTIAL_PLAN_CONNECTIONS


def test_the_deploy_button_settings_are_ready_for_production():
    # What the platform fills in: a postgres:// URL and a 64-hex-character secret.
    filled_in = {
        "SECRET_KEY": secrets.token_hex(32),
        "DATABASE_URL": "postgres://user:pass@db.example.com:5432/d1",
    }
    # What the deployer types in when the button asks: the app's address and the mail
    # provider's settings, a password with a percent-encoded slash included.
    typed_in = {
        "PUBLIC_URL": "https://x.herokuapp.com",
        "MAIL_URL": "smtp+starttls://apikey:s3cr%2Fet@smtp.example.com:587",
        "MAIL_FROM": "Accounts <accounts@example.com>",
    }
    env = _app_json()["env"]
    assert isinstance(env, dict)
    asked = {
        name
        for name, spec in env.items()
        if spec.get("required", True) and "value" not in spec and "generator" not in spec
    }
    assert asked == set(typed_in), asked
    settings = Settings.from_environment(_env_values() | filled_in | typed_in)
    assert settings.is_production
    assert not settings.auto_migrate, "production migrates in the release phase"
    assert settings.production_problems() == []
    assert settings.forwarded_allow_ips == ("*",)
    mail = parse_mail_url(settings.mail_url)
    assert (mail.backend, mail.host, mail.port) == ("smtp+starttls", "smtp.example.com", 587)
    assert (mail.username, mail.password) == ("apikey", "s3cr/et")
    assert settings.public_url == "https://x.herokuapp.com"


def test_the_buildpack_installs_the_project_itself():
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    assert [line for line in lines if line.strip() and not line.startswith("#")] == ["."]


def test_python_version_is_a_supported_minor_version():
    version = (ROOT / ".python-version").read_text().strip()
    assert re.fullmatch(r"3\.\d+", version), version
    pyproject = (ROOT / "pyproject.toml").read_text()
    minimum = re.search(r'requires-python = ">=3\.(\d+)"', pyproject)
    assert minimum
    assert int(version.split(".")[1]) >= int(minimum.group(1))


# -- what the Procfile relies on in uvicorn ----------------------------------------------


def test_uvicorn_takes_its_workers_from_web_concurrency(monkeypatch):
    # The CLI's --workers defaults to None, and Config then reads WEB_CONCURRENCY.
    [workers] = [param for param in uvicorn_command.params if param.name == "workers"]
    assert workers.default is None
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    assert uvicorn.Config("webapp.app:app", workers=None).workers == 3


def test_uvicorn_looks_for_the_app_in_the_working_directory():
    [app_dir] = [param for param in uvicorn_command.params if param.name == "app_dir"]
    # "" on sys.path is the working directory: webapp, templates/ and static/ come from there.
    assert app_dir.default == ""


def test_why_not_uvicorns_proxy_headers_it_trusts_the_left_most_entry():
    seen: dict[str, object] = {}

    async def app(scope, receive, send):
        seen["client"] = scope["client"]

    middleware = ProxyHeadersMiddleware(app, trusted_hosts="*")
    scope = {
        "type": "http",
        "client": ("10.1.2.3", 40000),
        "scheme": "http",
        "headers": [(b"x-forwarded-for", b"6.6.6.6, 203.0.113.7")],
    }
    asyncio.run(middleware(scope, None, None))  # type: ignore[arg-type]
    # The forged entry wins: this is why the Procfile says --no-proxy-headers.
    assert seen["client"] == ("6.6.6.6", 0)


# -- pool and threads -------------------------------------------------------------------


def test_the_thread_pool_matches_the_connection_pool(database_url):
    app = create_app(make_settings(database_url, db_pool_size=3, db_max_overflow=2))
    try:
        with TestClient(app) as client:
            # Read on the app's own event loop, after its lifespan has started.
            assert client.portal is not None
            limiter = client.portal.call(to_thread.current_default_thread_limiter)
            assert limiter.total_tokens == 5
    finally:
        app.state.services.db.dispose()


@pytest.mark.parametrize(("name", "value"), [("DB_POOL_SIZE", "0"), ("DB_MAX_OVERFLOW", "-1")])
def test_impossible_pool_sizes_are_refused(name, value):
    with pytest.raises(ConfigurationError, match=name):
        Settings.from_environment({"SECRET_KEY": "k" * 40, name: value})
