"""The only wiring: settings → services → middleware, routes and error handlers."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from anyio import to_thread
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.routing import Mount

from webapp.db import Database, Deadlines, create_db_engine
from webapp.domain.accounts import Accounts
from webapp.domain.activity import Activity, Housekeeping
from webapp.domain.emails import Emails
from webapp.domain.outbox import Mailer
from webapp.domain.passkeys import PasskeyService, RelyingParty
from webapp.domain.sessions import Sessions
from webapp.domain.throttle import Throttle
from webapp.domain.twofactor import TwoFactorService
from webapp.mail import MailSender, parse_mail_url
from webapp.settings import PROJECT_DIR, ConfigurationError, Settings
from webapp.web import errors, logs
from webapp.web.assets import StaticAssets
from webapp.web.auth import JWTCookieBackend, SessionCookieMiddleware
from webapp.web.browser import BrowserCookieMiddleware
from webapp.web.csrf import CSRFMiddleware
from webapp.web.middleware import SecurityHeadersMiddleware, TrustedProxyMiddleware
from webapp.web.rendering import create_templates
from webapp.web.routes import (
    account,
    activity,
    email,
    pages,
    passkeys,
    profile,
    security,
    sessions,
)
from webapp.web.services import Services
from webapp.web.tokens import TokenIssuer, derive_key

logger = logging.getLogger("webapp")


def build_services(settings: Settings) -> Services:
    db = Database(
        create_db_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            connect_timeout=settings.db_connect_timeout,
            deadlines=Deadlines(
                statement_timeout=settings.db_statement_timeout,
                lock_timeout=settings.db_lock_timeout,
                idle_in_transaction_timeout=settings.db_idle_in_transaction_timeout,
                tcp_user_timeout=settings.db_tcp_user_timeout,
            ),
        ),
        read_deadline=settings.db_read_deadline,
        write_deadline=settings.db_write_deadline,
    )
    assets = StaticAssets(PROJECT_DIR / "static")
    templates = create_templates(assets, settings)
    limits = Throttle(db, settings)
    mailer = Mailer(
        templates=templates,
        public_url=settings.public_url,
        token_key=derive_key(secret=settings.secret_key, purpose="email-token"),
    )
    emails = Emails(db, settings, limits, mailer)
    sessions_ = Sessions(db, settings, limits, emails)
    return Services(
        settings=settings,
        db=db,
        accounts=Accounts(db, settings, limits, emails),
        sessions=sessions_,
        emails=emails,
        mailer=mailer,
        tokens=TokenIssuer(
            # The JWT is signed with SECRET_KEY itself, as anyone checking a token
            # against the configuration expects; the other keys are derived from it.
            key=settings.secret_key.encode(),
            algorithm=settings.jwt_algorithm,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        ),
        csrf_key=derive_key(secret=settings.secret_key, purpose="csrf"),
        assets=assets,
        templates=templates,
        activity=Activity(db, settings, limits, mailer),
        # TOTP secrets are encrypted at rest with a key of their own (see twofactor.py).
        twofactor=TwoFactorService(
            db,
            limits,
            emails,
            sessions_,
            key=derive_key(secret=settings.secret_key, purpose="totp"),
        ),
        # WebAuthn challenges are signed with a key of their own (see passkeys.py).
        passkeys=PasskeyService(
            db,
            limits,
            emails,
            sessions_,
            key=derive_key(secret=settings.secret_key, purpose="webauthn-challenge"),
            relying_party=RelyingParty.from_public_url(settings.public_url),
            require_confirmed_email=settings.email_verification == "required",
        ),
    )


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_environment()
    if settings.is_production and settings.uses_sqlite and not settings.allow_sqlite_in_production:
        raise ConfigurationError(
            "APP_ENV=production on SQLite, whose file a PaaS loses at every restart: set "
            "DATABASE_URL to PostgreSQL (or ALLOW_SQLITE_IN_PRODUCTION=true on a lasting disk)"
        )
    # E-mail delivery (webapp/mail.py): started with the app, stopped before the engine.
    # An unset MAIL_URL (production's default) holds e-mails in the outbox; a bad one stops us.
    try:
        mail_config = parse_mail_url(settings.mail_url) if settings.mail_url else None
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    app_services = build_services(settings)
    # Link tokens (/password-reset/<token>, …) never reach the access log.
    logs.install()
    mail_sender = MailSender(
        app_services.db,
        config=mail_config,
        mailer=app_services.mailer,
        mail_from=settings.mail_from,
    )
    # Deletes what is past keeping (ACTIVITY_RETENTION_DAYS): at start, then hourly.
    housekeeping = Housekeeping(app_services.activity)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if settings.is_production and settings.uses_sqlite:
            logger.warning(
                "APP_ENV=production on SQLite (ALLOW_SQLITE_IN_PRODUCTION=true): the database "
                "file is lost whenever the platform replaces the disk."
            )
        # Database work runs in worker threads (the loop's executor; anyio's for the rest),
        # each holding at most one connection at a time: as many threads as pooled
        # connections, so no thread waits for the pool.
        threads = settings.db_pool_size + settings.db_max_overflow
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="db")
        )
        to_thread.current_default_thread_limiter().total_tokens = threads
        if settings.auto_migrate:
            # Imported here: a production worker (migrated in the release phase) never
            # loads Alembic, which would cost it some 10 MB.
            from webapp.migrate import upgrade_to_head

            await run_in_threadpool(upgrade_to_head, settings.database_url)
        await mail_sender.start()
        await housekeeping.start()
        yield
        await housekeeping.stop()
        await mail_sender.stop()
        app_services.db.dispose()

    app = Starlette(
        routes=[
            *pages.routes,
            *sessions.routes,
            *profile.routes,
            *email.routes,
            *account.routes,
            *activity.routes,
            *security.routes,
            *passkeys.routes,
            Mount("/static", app=app_services.assets, name="static"),
        ],
        middleware=[
            Middleware(
                TrustedProxyMiddleware,
                trusted=settings.forwarded_allow_ips,
                hops=settings.forwarded_trusted_hops,
            ),
            Middleware(SecurityHeadersMiddleware),
            Middleware(
                BrowserCookieMiddleware,
                signing_key=derive_key(secret=settings.secret_key, purpose="browser-cookie"),
            ),
            # Writes the cookies the authentication backend decides on (renewals).
            Middleware(SessionCookieMiddleware),
            Middleware(
                AuthenticationMiddleware,
                backend=JWTCookieBackend(app_services.sessions, app_services.tokens),
                on_error=errors.auth_error,
            ),
            # Innermost: it reads the session, and every unsafe request passes it.
            Middleware(
                CSRFMiddleware,
                key=app_services.csrf_key,
                refuse=errors.http_error,
                not_signed_in=errors.not_signed_in,
            ),
        ],
        exception_handlers=errors.exception_handlers,
        lifespan=lifespan,
    )
    # /login/ is not /login: no redirect built from the Host header.
    app.router.redirect_slashes = False
    app.state.services = app_services
    app.state.mail_sender = mail_sender
    app.state.housekeeping = housekeeping
    return app


def _app_from_environment() -> Starlette:
    try:
        return create_app()
    except ConfigurationError as exc:
        # One clear line instead of a traceback.
        sys.exit(f"webapp: configuration error: {exc}")


app = _app_from_environment()
