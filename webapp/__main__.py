"""Operator commands: `python -m webapp serve | migrate | create-user | check | mail | sessions |
events | delete-user`."""

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
        return _database_unusable(exc)
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
        # Unreachable, or not migrated yet: one line, never a traceback with the URL in it.
        return _database_unusable(exc)
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


# -- sessions: see and end a user's sessions ---------------------------------------------


def _sessions_command(settings: Settings, args: argparse.Namespace) -> int:
    """`sessions list USERNAME` and `sessions revoke-all USERNAME`: exit 1 for an unknown user."""
    from sqlalchemy.exc import DBAPIError

    from webapp.app import build_services
    from webapp.domain.sessions import Sessions

    async def run(sessions: Sessions) -> int:
        account = await sessions.account_named(args.username)
        if account is None:
            print(f"webapp: there is no user named {args.username!r}", file=sys.stderr)
            return 1
        if args.sessions_command == "revoke-all":
            ended = await sessions.end_all_sessions(account.id, detail="by an operator")
            plural = "" if ended == 1 else "s"
            print(f"ended {ended} session{plural} of {account.username}")
            return 0
        listed = await sessions.live_sessions(account.id)
        if not listed:
            print(f"{account.username} has no live sessions")
            return 0
        table = [("PUBLIC ID", "BROWSER", "ADDRESS", "SIGNED IN (UTC)", "LAST ACTIVE (UTC)")]
        table += [
            (
                view.handle,
                str(view.device),
                view.client_addr or "unknown",
                f"{view.signed_in_at:%Y-%m-%d %H:%M:%S}",
                f"{view.last_active_at:%Y-%m-%d %H:%M:%S}",
            )
            for view in listed
        ]
        widths = [max(len(line[column]) for line in table) for column in range(5)]
        for line in table:
            print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
        return 0

    services = build_services(settings)
    try:
        return asyncio.run(run(services.sessions))
    except DBAPIError as exc:
        return _database_unusable(exc)
    finally:
        services.db.dispose()


# -- events and delete-user: an account's history, and deleting it ------------------------


def _database_unusable(exc: Exception) -> int:
    """Unreachable, or not migrated yet: one line (exit 1), never a traceback with the URL."""
    print(
        f"webapp: the database cannot be used ({type(exc).__name__}); "
        "is it reachable, and has `migrate` run?",
        file=sys.stderr,
    )
    return 1


def _events(settings: Settings, args: argparse.Namespace) -> int:
    """`events USERNAME [--limit N]`: the newest events, newest first; exit 1 if no such user."""
    from sqlalchemy.exc import DBAPIError

    from webapp.app import build_services

    if args.limit < 1:
        print("webapp: --limit must be at least 1", file=sys.stderr)
        return 2
    services = build_services(settings)
    try:
        found = asyncio.run(services.activity.recent(args.username, limit=args.limit))
    except DBAPIError as exc:
        return _database_unusable(exc)
    finally:
        services.db.dispose()
    if found is None:
        print(f"webapp: there is no user named {args.username!r}", file=sys.stderr)
        return 1
    account, listed = found
    if not listed:
        print(f"{account.username} has no recorded events")
        return 0
    table = [("WHEN (UTC)", "EVENT", "BROWSER", "ADDRESS", "DETAIL")]
    table += [
        (
            f"{event.created_at:%Y-%m-%d %H:%M:%S}",
            event.kind,
            f"{event.browser} on {event.system}",
            event.client_addr or "unknown",
            event.detail,
        )
        for event in listed
    ]
    widths = [max(len(line[column]) for line in table) for column in range(5)]
    for line in table:
        cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        print("  ".join(cells).rstrip())
    return 0


def _disable_two_factor(settings: Settings, args: argparse.Namespace) -> int:
    """`disable-two-factor USERNAME --yes`: for a user who lost both the authenticator and
    the recovery codes, once an operator has checked who is asking (out of band). Turns
    the authenticator app off and removes every passkey; writes totp_disabled and
    passkey_removed events and e-mails the account's address."""
    from sqlalchemy.exc import DBAPIError

    from webapp.app import build_services
    from webapp.models import Client

    if not args.yes:
        print(
            "webapp: refusing without --yes: turn two-factor off only after checking, by "
            "other means, that the account's owner is asking",
            file=sys.stderr,
        )
        return 2
    services = build_services(settings)
    try:
        account = asyncio.run(services.sessions.account_named(args.username))
        if account is None:
            print(f"webapp: there is no user named {args.username!r}", file=sys.stderr)
            return 1
        operator = Client(address="operator", user_agent="python -m webapp disable-two-factor")
        was_on = asyncio.run(services.twofactor.disable(account.id, operator))
        # A passkey signs in on its own, and the lost phone may hold one.
        passkeys = asyncio.run(services.passkeys.remove_all(account.id, operator))
    except DBAPIError as exc:
        return _database_unusable(exc)
    finally:
        services.db.dispose()
    if not was_on and not passkeys:
        print(f"{account.username} has no two-factor sign-in and no passkey to turn off")
        return 0
    done = ["turned two-factor sign-in off"] if was_on else []
    if passkeys:
        done.append(f"removed {passkeys} passkey{'' if passkeys == 1 else 's'}")
    print(
        f"{' and '.join(done)} for {account.username}; "
        f"a notice to {account.email} waits in the outbox"
    )
    return 0


def _delete_user(settings: Settings, args: argparse.Namespace) -> int:
    """`delete-user USERNAME --yes`: what the account's own delete button does, without the
    password; refuses without --yes."""
    from sqlalchemy.exc import DBAPIError

    from webapp.app import build_services

    if not args.yes:
        print(
            f"webapp: refusing to delete {args.username!r} without --yes: the account and "
            "every row of it are deleted for good",
            file=sys.stderr,
        )
        return 2
    services = build_services(settings)
    try:
        deleted = asyncio.run(services.activity.delete_user(args.username))
    except DBAPIError as exc:
        return _database_unusable(exc)
    finally:
        services.db.dispose()
    if deleted is None:
        print(f"webapp: there is no user named {args.username!r}", file=sys.stderr)
        return 1
    print(f"deleted user {deleted.username} (id {deleted.id}) and every row of it:")
    for table, count in deleted.rows.items():
        print(f"  {table}: {count}")
    # Delivered by the app's sender, like every e-mail.
    print(f"a goodbye notice to {deleted.email} waits in the outbox")
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
    sessions = commands.add_parser("sessions", help="see and end a user's sessions")
    sessions_commands = sessions.add_subparsers(dest="sessions_command", required=True)
    sessions_list = sessions_commands.add_parser(
        "list", help="a user's live sessions: public id, browser, address, signed in, last active"
    )
    sessions_list.add_argument("username")
    sessions_list.set_defaults(run=_sessions_command)
    revoke_all = sessions_commands.add_parser(
        "revoke-all", help="end every session of a user (recorded in their activity)"
    )
    revoke_all.add_argument("username")
    revoke_all.set_defaults(run=_sessions_command)
    events = commands.add_parser("events", help="a user's recent security events, newest first")
    events.add_argument("username")
    events.add_argument("--limit", type=int, default=50, help="how many (default 50)")
    events.set_defaults(run=_events)
    disable_two_factor = commands.add_parser(
        "disable-two-factor",
        help=(
            "turn a user's two-factor sign-in off and remove their passkeys, after an "
            "out-of-band check (needs --yes)"
        ),
    )
    disable_two_factor.add_argument("username")
    disable_two_factor.add_argument("--yes", action="store_true", help="really turn it off")
    disable_two_factor.set_defaults(run=_disable_two_factor)
    delete_user = commands.add_parser(
        "delete-user", help="delete an account and every row of it (needs --yes)"
    )
    delete_user.add_argument("username")
    delete_user.add_argument("--yes", action="store_true", help="really delete it")
    delete_user.set_defaults(run=_delete_user)
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
