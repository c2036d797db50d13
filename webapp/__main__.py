"""Operator commands: `python -m webapp serve | migrate | create-user | check | mail`."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Sequence
from typing import Any

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
        # As the Procfile: deadlines for slow and oversized requests (webapp/web/protocol.py).
        http="webapp.web.protocol:GuardedHttpToolsProtocol",
        timeout_keep_alive=5,
        timeout_graceful_shutdown=20,
    )
    return 0


def _migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from webapp.migrate import upgrade_to_head

    upgrade_to_head(settings.database_url)
    print("database is at the newest schema")
    return 0


def _create_user(settings: Settings, args: argparse.Namespace) -> int:
    from sqlalchemy.exc import DBAPIError

    from webapp.app import build_services
    from webapp.domain.errors import InvalidInput
    from webapp.domain.validation import parse_registration

    password = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else getpass.getpass()
    fields = {
        "username": args.username,
        "email": args.email,
        "password": password,
        "confirm_password": password,
    }
    services = build_services(settings)
    db = services.db
    try:
        registration = parse_registration(fields, min_password_length=settings.password_min_length)
        # The confirmation e-mail is queued with the account; the app's sender delivers it.
        account = asyncio.run(services.accounts.register(registration))
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
    if settings.mail_url:
        from webapp.mail import parse_mail_url

        try:
            parse_mail_url(settings.mail_url)
        except ValueError as exc:
            problems.append(str(exc))
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


# -- mail: the outbox and the mail server --------------------------------------------------


def _mail_status(settings: Settings, _args: argparse.Namespace) -> int:
    from sqlalchemy.exc import DBAPIError

    from webapp.db import Database, create_db_engine
    from webapp.mail import mail_status

    db = Database(create_db_engine(settings.database_url))
    try:
        status = mail_status(db)
    except DBAPIError as exc:
        print(
            f"webapp: the database cannot be used ({type(exc).__name__}); "
            "is it reachable, and has `migrate` run?",
            file=sys.stderr,
        )
        return 1
    finally:
        db.dispose()
    oldest = status["oldest_pending"]
    print(f"pending: {status['pending']}")
    print(f"oldest pending: {f'{oldest:%Y-%m-%d %H:%M:%S} UTC' if oldest else '-'}")
    print(f"failed (given up after a day): {status['failed']}")
    if status["recent_errors"]:
        print("last errors:")
    for entry in status["recent_errors"]:
        state = "given up" if entry["given_up"] else "retrying"
        print(
            f"  #{entry['id']} {entry['kind']}, {entry['attempts']} attempts, {state}: "
            f"{entry['error']}"
        )
    return 0


def _mail_send_test(settings: Settings, args: argparse.Namespace) -> int:
    from webapp.mail import describe_error, parse_mail_url, send_test

    try:
        config = parse_mail_url(settings.mail_url)
    except ValueError as exc:
        print(f"webapp: {exc}", file=sys.stderr)
        return 1
    try:
        send_test(settings, args.address)
    except Exception as exc:
        print(
            f"failed to send with {config.describe()}: {describe_error(exc, config)}",
            file=sys.stderr,
        )
        return 1
    print(f"sent a test message to {args.address} with {config.describe()}")
    return 0


def _mail_inbox(_settings: Settings, args: argparse.Namespace) -> int:
    """A local SMTP server that prints what it receives: for development, never a route."""
    import email
    import email.policy
    import threading

    try:
        from aiosmtpd.controller import Controller
    except ImportError:
        print("webapp: `mail inbox` needs aiosmtpd: pip install -e '.[test]'", file=sys.stderr)
        return 1

    class Printer:
        async def handle_DATA(self, _server: object, _session: object, envelope: Any) -> str:
            message = email.message_from_bytes(envelope.content, policy=email.policy.default)
            print("-" * 72)
            for name in ("From", "To", "Subject", "Date"):
                print(f"{name}: {message[name]}")
            body = message.get_body(preferencelist=("plain",))
            print()
            print(body.get_content() if body is not None else "(no plain-text part)", flush=True)
            return "250 OK"

    controller = Controller(Printer(), hostname=args.host, port=args.port)
    controller.start()
    print(
        f"listening: set MAIL_URL=smtp://{args.host}:{args.port} and send; Ctrl-C stops",
        flush=True,
    )
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()
    return 0


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
    mail = commands.add_parser("mail", help="the e-mail outbox and the mail server")
    mail_commands = mail.add_subparsers(dest="mail_command", required=True)
    mail_commands.add_parser(
        "status", help="pending and failed e-mails, the oldest pending, the last errors"
    ).set_defaults(run=_mail_status)
    send_test = mail_commands.add_parser(
        "send-test", help="send a test message now with MAIL_URL; exit 1 if it fails"
    )
    send_test.add_argument("address")
    send_test.set_defaults(run=_mail_send_test)
    inbox = mail_commands.add_parser(
        "inbox", help="a local SMTP server that prints what it receives (development)"
    )
    inbox.add_argument("--host", default="127.0.0.1")
    inbox.add_argument("--port", type=int, default=8025)
    inbox.set_defaults(run=_mail_inbox)
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
