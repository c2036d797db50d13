"""Every setting of the app, read once from the environment and `.env`.

Nothing else in the package reads the environment: the app, the command line
and Alembic all take a `Settings` built here.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from starlette.config import Config

AppEnv = Literal["development", "production", "test"]
EmailVerification = Literal["optional", "required"]
APP_ENVS: tuple[AppEnv, ...] = ("development", "production", "test")
JWT_ALGORITHMS = ("HS256", "HS384", "HS512")

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEV_SECRET_FILE = PROJECT_DIR / ".secret_key"
MIN_SECRET_BYTES = 32
MIN_SECRET_DISTINCT_CHARACTERS = 16
# Values people paste from examples and tutorials; never a production key.
PLACEHOLDER_SECRETS = frozenset(
    {
        "changeme",
        "change-me",
        "secret",
        "secret-key",
        "secretkey",
        "your-secret-key",
        "your_secret_key",
        "supersecret",
        "super-secret-key",
        "replace-me",
        "insecure",
        "development",
        "django-insecure",
    }
)


def secret_key_problem(secret_key: str) -> str | None:
    """Why a SECRET_KEY is unfit for production, or None."""
    lowered = secret_key.strip().lower()
    if any(lowered.startswith(placeholder) for placeholder in PLACEHOLDER_SECRETS):
        return "SECRET_KEY is a placeholder from an example; generate a random one"
    distinct = len(set(secret_key))
    # A platform's generated hex key (app.json's "generator": "secret": 64 hex digits) has
    # only 16 symbols to draw from and misses one of them a quarter of the time; such a key
    # is still 250 random bits, so it needs 12 of the 16.
    generated_hex = len(secret_key) >= 64 and all(c in "0123456789abcdef" for c in secret_key)
    if distinct < (12 if generated_hex else MIN_SECRET_DISTINCT_CHARACTERS):
        return (
            f"SECRET_KEY has fewer than {MIN_SECRET_DISTINCT_CHARACTERS} distinct characters; "
            "generate a random one"
        )
    return None


class ConfigurationError(Exception):
    """A setting is missing or has a value the app cannot run with."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    app_env: AppEnv = "development"
    secret_key: str = field(repr=False)
    database_url: str = f"sqlite:///{PROJECT_DIR / 'webapp.db'}"
    bcrypt_rounds: int = 12
    password_min_length: int = 8
    jwt_algorithm: str = "HS256"
    jwt_issuer: str = "webapp"
    jwt_audience: str = "webapp"
    # Peers whose X-Forwarded-For / X-Forwarded-Proto we believe ("*" = any).
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1", "::1")
    # How many proxies in front of us append to X-Forwarded-For (1 on a PaaS router).
    forwarded_trusted_hops: int = 1
    allow_sqlite_in_production: bool = False
    # Apply migrations at start-up; production runs them in the release phase.
    auto_migrate: bool = True
    db_pool_size: int = 10
    db_max_overflow: int = 30
    # Seconds to wait for a database connection before answering 503.
    db_connect_timeout: int = 2
    # Seconds a request waits for a read / a write before answering 503.
    db_read_deadline: float = 1.5
    db_write_deadline: float = 6.0
    # PostgreSQL, per connection, in milliseconds: the server ends a statement, a lock wait,
    # a transaction left idle (its locks with it), and a connection whose data or keepalives
    # go unacknowledged, after these.
    db_statement_timeout: int = 5000
    db_lock_timeout: int = 3000
    db_idle_in_transaction_timeout: int = 10000
    db_tcp_user_timeout: int = 5000
    # Sign-in throttling: failures allowed per account / per client in the window.
    throttle_window: int = 15 * 60
    throttle_account_limit: int = 10
    throttle_client_limit: int = 100
    # New accounts per client per hour, and username changes per account per hour.
    registration_limit: int = 10
    rename_limit: int = 10
    # The absolute end of a session, in seconds after sign-in (12 hours), and of one
    # opened with "remember me", in days.
    session_max_age: int = 12 * 3600
    remember_me_days: int = 30
    # E-mail delivery: "console:" (the log), "file:///folder", "smtp://[user:pass@]host:port",
    # "smtp+starttls://…" or "smtps://…". Production has no default: `check` asks for one.
    mail_url: str = "console:"
    mail_from: str = "Accounts <accounts@localhost>"
    # The origin of every link in an e-mail; never taken from a request's Host header.
    public_url: str = "http://localhost:8000"
    # "required": an unconfirmed address cannot sign in (a fresh link is sent instead).
    email_verification: EmailVerification = "optional"
    # Security events older than this are deleted by the app in the background.
    activity_retention_days: int = 90

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigurationError(problems[0])

    def problems(self) -> list[str]:
        """What makes these settings unusable, one sentence each."""
        found: list[str] = []
        if self.app_env not in APP_ENVS:
            found.append(f"APP_ENV must be one of {', '.join(APP_ENVS)}, not {self.app_env!r}")
        if len(self.secret_key.encode()) < MIN_SECRET_BYTES:
            found.append(f"SECRET_KEY must be at least {MIN_SECRET_BYTES} bytes long")
        if self.jwt_algorithm not in JWT_ALGORITHMS:
            found.append(f"JWT_ALGORITHM must be one of {', '.join(JWT_ALGORITHMS)}")
        if not 4 <= self.bcrypt_rounds <= 31:
            found.append("BCRYPT_ROUNDS must be between 4 and 31")
        if not 1 <= self.password_min_length <= 1024:
            found.append("PASSWORD_MIN_LENGTH must be between 1 and 1024")
        if self.forwarded_trusted_hops < 1:
            found.append("FORWARDED_TRUSTED_HOPS must be at least 1")
        if not 0 < self.db_read_deadline <= 60 or not 0 < self.db_write_deadline <= 60:
            found.append("DB_READ_DEADLINE and DB_WRITE_DEADLINE must be between 0 and 60 seconds")
        if self.db_pool_size < 1 or self.db_max_overflow < 0:
            found.append("DB_POOL_SIZE must be at least 1 and DB_MAX_OVERFLOW at least 0")
        if not self.jwt_issuer or not self.jwt_audience:
            found.append("JWT_ISSUER and JWT_AUDIENCE must not be empty")
        if self.registration_limit < 1 or self.rename_limit < 1:
            found.append("REGISTRATION_LIMIT and RENAME_LIMIT must be at least 1")
        if self.session_max_age < 3600 or self.remember_me_days < 1:
            found.append("SESSION_MAX_AGE must be at least 3600 and REMEMBER_ME_DAYS at least 1")
        if self.activity_retention_days < 1:
            found.append("ACTIVITY_RETENTION_DAYS must be at least 1")
        if self.email_verification not in ("optional", "required"):
            found.append("EMAIL_VERIFICATION must be optional or required")
        if self.public_url and not self.public_url.startswith(("http://", "https://")):
            found.append("PUBLIC_URL must start with http:// or https://")
        if self.is_production and (problem := secret_key_problem(self.secret_key)):
            found.append(problem)
        return found

    @property
    def is_production(self) -> bool:
        return self.app_env == "production"

    @property
    def uses_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def production_problems(self) -> list[str]:
        """What is wrong with these settings for serving real users."""
        found = []
        if not self.is_production:
            found.append("APP_ENV is not 'production'")
        if self.uses_sqlite and not self.allow_sqlite_in_production:
            found.append(
                "DATABASE_URL points at SQLite, whose file a PaaS wipes at every restart; "
                "use PostgreSQL (or set ALLOW_SQLITE_IN_PRODUCTION=true)"
            )
        if self.bcrypt_rounds < 12:
            found.append("BCRYPT_ROUNDS is below 12")
        if self.password_min_length < 8:
            found.append("PASSWORD_MIN_LENGTH is below 8")
        if problem := secret_key_problem(self.secret_key):
            found.append(problem)
        if not self.public_url:
            found.append("PUBLIC_URL is not set: e-mails need it for their links")
        elif self.is_production and not self.public_url.startswith("https://"):
            found.append("PUBLIC_URL is not https://")
        if not self.mail_url:
            found.append("MAIL_URL is not set: no e-mail (confirmations, resets) can be sent")
        elif self.mail_url.startswith("console:"):
            found.append("MAIL_URL is console: e-mails only reach the log")
        return found

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, env_file: Path | None = None
    ) -> Settings:
        """Read settings from real environment variables, then `.env`, then defaults."""
        env = os.environ if environ is None else environ
        dotenv = env_file or PROJECT_DIR / ".env"
        config = Config(dotenv if dotenv.is_file() else None, environ=dict(env))
        app_env = config("APP_ENV", default=cls.app_env)
        if app_env not in APP_ENVS:
            raise ConfigurationError(f"APP_ENV must be one of {', '.join(APP_ENVS)}")
        secret_key = config("SECRET_KEY", default="")
        if not secret_key:
            if app_env == "production":
                raise ConfigurationError("SECRET_KEY is not set; production needs a random one")
            secret_key = _development_secret()
        try:
            return cls(
                app_env=app_env,
                secret_key=secret_key,
                database_url=config("DATABASE_URL", default=cls.database_url),
                bcrypt_rounds=config("BCRYPT_ROUNDS", cast=int, default=cls.bcrypt_rounds),
                password_min_length=config(
                    "PASSWORD_MIN_LENGTH", cast=int, default=cls.password_min_length
                ),
                jwt_algorithm=config("JWT_ALGORITHM", default=cls.jwt_algorithm),
                jwt_issuer=config("JWT_ISSUER", default=cls.jwt_issuer),
                jwt_audience=config("JWT_AUDIENCE", default=cls.jwt_audience),
                forwarded_allow_ips=_split(
                    config("FORWARDED_ALLOW_IPS", default=",".join(cls.forwarded_allow_ips))
                ),
                forwarded_trusted_hops=config(
                    "FORWARDED_TRUSTED_HOPS", cast=int, default=cls.forwarded_trusted_hops
                ),
                allow_sqlite_in_production=config(
                    "ALLOW_SQLITE_IN_PRODUCTION", cast=bool, default=cls.allow_sqlite_in_production
                ),
                auto_migrate=config("AUTO_MIGRATE", cast=bool, default=app_env != "production"),
                db_pool_size=config("DB_POOL_SIZE", cast=int, default=cls.db_pool_size),
                db_max_overflow=config("DB_MAX_OVERFLOW", cast=int, default=cls.db_max_overflow),
                db_read_deadline=config(
                    "DB_READ_DEADLINE", cast=float, default=cls.db_read_deadline
                ),
                db_write_deadline=config(
                    "DB_WRITE_DEADLINE", cast=float, default=cls.db_write_deadline
                ),
                db_statement_timeout=config(
                    "DB_STATEMENT_TIMEOUT", cast=int, default=cls.db_statement_timeout
                ),
                db_lock_timeout=config("DB_LOCK_TIMEOUT", cast=int, default=cls.db_lock_timeout),
                db_idle_in_transaction_timeout=config(
                    "DB_IDLE_IN_TRANSACTION_TIMEOUT",
                    cast=int,
                    default=cls.db_idle_in_transaction_timeout,
                ),
                db_tcp_user_timeout=config(
                    "DB_TCP_USER_TIMEOUT", cast=int, default=cls.db_tcp_user_timeout
                ),
                registration_limit=config(
                    "REGISTRATION_LIMIT", cast=int, default=cls.registration_limit
                ),
                # Production has no mail or link defaults: `check` reports them missing.
                mail_url=config(
                    "MAIL_URL", default="" if app_env == "production" else cls.mail_url
                ),
                mail_from=config("MAIL_FROM", default=cls.mail_from),
                public_url=config(
                    "PUBLIC_URL", default="" if app_env == "production" else cls.public_url
                ).rstrip("/"),
                activity_retention_days=config(
                    "ACTIVITY_RETENTION_DAYS", cast=int, default=cls.activity_retention_days
                ),
                email_verification=config(
                    "EMAIL_VERIFICATION", default=cls.email_verification
                ).lower(),  # type: ignore[arg-type]  # checked in problems()
                rename_limit=config("RENAME_LIMIT", cast=int, default=cls.rename_limit),
                session_max_age=config("SESSION_MAX_AGE", cast=int, default=cls.session_max_age),
                remember_me_days=config("REMEMBER_ME_DAYS", cast=int, default=cls.remember_me_days),
            )
        except ValueError as exc:
            # Starlette's Config names the key in its message ("Config 'X' has value ...").
            raise ConfigurationError(str(exc)) from None


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _development_secret() -> str:
    """A random key made once and kept in a git-ignored file, so restarts keep sessions."""
    with contextlib.suppress(FileNotFoundError):
        if existing := DEV_SECRET_FILE.read_text().strip():
            return existing
    key = secrets.token_urlsafe(48)
    try:
        # O_EXCL: when several workers start at once, exactly one writes the file.
        fd = os.open(DEV_SECRET_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another worker created it a moment ago: wait for its key to be written.
        for _ in range(50):
            if existing := DEV_SECRET_FILE.read_text().strip():
                return existing
            time.sleep(0.01)
        raise ConfigurationError(
            f"{DEV_SECRET_FILE} is empty; delete it or set SECRET_KEY"
        ) from None
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key
