"""Operator commands: `python -m webapp serve | migrate | create-user | check`."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Sequence

from webapp.settings import ConfigurationError, Settings


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from webapp.migrate import upgrade_to_head

    upgrade_to_head(settings.database_url)
    uvicorn.run(
        "webapp.app:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        # Our TrustedProxyMiddleware reads X-Forwarded-* with a fixed number of trusted
        # hops; uvicorn's own handling would take the forgeable left-most address.
        proxy_headers=False,
        server_header=False,
    )
    return 0


def _migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from webapp.migrate import upgrade_to_head

    upgrade_to_head(settings.database_url)
    print("database is at the newest schema")
    return 0


def _create_user(settings: Settings, args: argparse.Namespace) -> int:
    from sqlalchemy.exc import DBAPIError

    from webapp.db import Database, create_db_engine
    from webapp.domain.accounts import Accounts
    from webapp.domain.errors import InvalidInput
    from webapp.domain.throttle import Throttle
    from webapp.domain.validation import parse_registration

    password = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else getpass.getpass()
    fields = {
        "username": args.username,
        "email": args.email,
        "password": password,
        "confirm_password": password,
    }
    db = Database(create_db_engine(settings.database_url))
    try:
        registration = parse_registration(fields, min_password_length=settings.password_min_length)
        accounts = Accounts(db, settings, Throttle(db, settings))
        account = asyncio.run(accounts.register(registration))
    except InvalidInput as exc:
        for field, message in exc.errors.items():
            print(f"{field}: {message}", file=sys.stderr)
        return 1
    except DBAPIError as exc:
        # Unreachable, or not migrated yet: one line, never a traceback with the URL in it.
        print(
            f"webapp: the database cannot be used ({type(exc).__name__}); "
            "is it reachable, and has `migrate` run?",
            file=sys.stderr,
        )
        return 1
    finally:
        db.dispose()
    print(f"created user {account.username} (id {account.id})")
    return 0


def _check(settings: Settings, _args: argparse.Namespace) -> int:
    from webapp.db import UNAVAILABLE_ERRORS, Database, create_db_engine
    from webapp.migrate import pending_revisions

    problems = settings.production_problems()
    db = Database(create_db_engine(settings.database_url))
    try:
        db.ping()
        pending = pending_revisions(settings.database_url)
        if pending:
            problems.append(f"the database lacks migrations {', '.join(pending)}: run `migrate`")
    except UNAVAILABLE_ERRORS as exc:
        problems.append(f"the database does not answer ({type(exc).__name__})")
    finally:
        db.dispose()
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    if not problems:
        print("configuration is ready for production")
    return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m webapp", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="migrate, then serve with uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=None)
    serve.set_defaults(run=_serve)
    commands.add_parser("migrate", help="apply database migrations").set_defaults(run=_migrate)
    create_user = commands.add_parser("create-user", help="create an account")
    create_user.add_argument("--username", required=True)
    create_user.add_argument("--email", required=True)
    create_user.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    create_user.set_defaults(run=_create_user)
    commands.add_parser(
        "check", help="report what is wrong with the production configuration"
    ).set_defaults(run=_check)
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_environment()
    except ConfigurationError as exc:
        print(f"webapp: configuration error: {exc}", file=sys.stderr)
        return 2
    result: int = args.run(settings, args)
    return result


if __name__ == "__main__":
    sys.exit(main())
