"""E-mail delivery against real servers: MAIL_URL's backends, TLS, the background sender
(outages, back-off, giving up, several senders on one database) and the `mail` commands.

SMTP is aiosmtpd in this process (tests/smtp.py); certificates come from a trustme CA.
Back-off is never waited out: tests move the row's timestamps in the database instead and
drive passes with `run_once()`. The only waits are bounded waits for a message to arrive.
"""

from __future__ import annotations

import email
import email.policy
import logging
import smtplib
import socket
import ssl
import stat
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import anyio
import jinja2
import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from anyio.from_thread import BlockingPortal, start_blocking_portal
from sqlalchemy import text, update
from sqlmodel import col
from starlette.testclient import TestClient

from tests.helpers import ROOT, at_once, make_settings
from tests.live import base_env, free_port
from tests.smtp import Inbox, links_in, smtp_server, text_of
from webapp.app import create_app
from webapp.db import Database, create_db_engine
from webapp.domain.outbox import TOKEN_MARK, Mailer, link_token
from webapp.mail import (
    DeliveryError,
    MailConfig,
    MailSender,
    Pass,
    build_message,
    deliver,
    describe_error,
    mail_status,
    parse_mail_url,
    retry_delay,
    sample_message,
)
from webapp.models import OutboxMessage
from webapp.settings import ConfigurationError

T = TypeVar("T")
PUBLIC_URL = "https://accounts.example.com"
MAIL_FROM = "Accounts <accounts@example.com>"
MAILER = Mailer(
    templates=jinja2.Environment(autoescape=True), public_url=PUBLIC_URL, token_key=b"k" * 64
)
SECRET = "hunter2-Secret"


# -- fixtures and helpers ---------------------------------------------------------------


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(create_db_engine(database_url))
    yield database
    with database.engine.begin() as connection:
        connection.execute(text("DELETE FROM outbox"))
    database.dispose()


@pytest.fixture
def portal() -> Iterator[BlockingPortal]:
    """An event loop in a thread, as the app's: senders run there, the test waits here."""
    with start_blocking_portal() as running:
        yield running


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    """The default context (certificates and host names checked), trusting the test CA."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@contextmanager
def smtp_at(port: int, **controller_args: Any) -> Iterator[Inbox]:
    """An SMTP server on a port of our choosing (to bring one back where it was)."""
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **controller_args)
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()


def queue(db: Database, count: int = 1, **fields: Any) -> list[int]:
    """Rows as Mailer.enqueue writes them (without its templates)."""
    with db.writing() as session:
        rows = [
            OutboxMessage(
                kind=fields.get("kind", "notice"),
                to_address=fields.get("to_address", f"user{index}@example.com"),
                subject=fields.get("subject", f"Message {index}"),
                body_text=fields.get("body_text", f"Hello {index}.\n"),
                body_html=fields.get("body_html"),
                token_nonce=fields.get("token_nonce"),
            )
            for index in range(count)
        ]
        session.add_all(rows)
        session.flush()
        ids = [row.id for row in rows]
    assert all(isinstance(row_id, int) for row_id in ids)
    return ids  # type: ignore[return-value]


def row(db: Database, row_id: int) -> OutboxMessage:
    with db.reading() as session:
        found = session.get(OutboxMessage, row_id)
        assert found is not None
        return found


def change(db: Database, row_id: int, **values: Any) -> None:
    with db.writing() as session:
        session.execute(
            update(OutboxMessage).where(col(OutboxMessage.id) == row_id).values(**values)
        )


def due_now(db: Database, row_id: int) -> None:
    """Skip the back-off: due since the row was made (no clock involved)."""
    change(db, row_id, next_attempt_at=row(db, row_id).created_at)


def sender(db: Database, url: str, **options: Any) -> MailSender:
    return MailSender(db, config=parse_mail_url(url), mailer=MAILER, mail_from=MAIL_FROM, **options)


@contextmanager
def running(portal: BlockingPortal, *senders: MailSender) -> Iterator[None]:
    for each in senders:
        portal.call(each.start)
    try:
        yield
    finally:
        for each in senders:
            portal.call(each.stop)


def eventually(check: Callable[[], T], timeout: float = 10.0) -> T:
    """Wait, bounded, for something the sender does in the background."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "it did not happen in time"
        time.sleep(0.02)
    return result


def message(to: str = "alice@example.com") -> EmailMessage:
    return sample_message(to=to, mail_from=MAIL_FROM, public_url=PUBLIC_URL)


# -- MAIL_URL -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("console:", MailConfig(backend="console")),
        ("console://", MailConfig(backend="console")),
        ("file:///var/mail/out", MailConfig(backend="file", folder=Path("/var/mail/out"))),
        ("file:///var/my%20mail", MailConfig(backend="file", folder=Path("/var/my mail"))),
        ("smtp://mail.example.com", MailConfig(backend="smtp", host="mail.example.com", port=25)),
        (
            "SMTP://Mail.Example.com:2525",
            MailConfig(backend="smtp", host="mail.example.com", port=2525),
        ),
        ("smtp://[::1]:1025", MailConfig(backend="smtp", host="::1", port=1025)),
        (
            "smtp+starttls://apikey:s%2Fe%40cr%3Aet@smtp.example.net",
            MailConfig(
                backend="smtp+starttls",
                host="smtp.example.net",
                port=587,
                username="apikey",
                password="s/e@cr:et",
            ),
        ),
        (
            "smtps://me%40example.com:pw@smtp.example.net:465",
            MailConfig(
                backend="smtps",
                host="smtp.example.net",
                port=465,
                username="me@example.com",
                password="pw",
            ),
        ),
    ],
)
def test_mail_urls_of_every_form(url, expected):
    assert parse_mail_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "",
        "console:log",
        "sendmail://localhost",
        f"{SECRET}@smtp.example.com:587",
        f"smtp:user:{SECRET}@smtp.example.com",
        "smtp://",
        f"smtp://user:{SECRET}@smtp.example.com:port",
        f"smtp://user:{SECRET}@smtp.example.com:99999",
        f"smtp://user:{SECRET}@",
        f"smtp://user:{SECRET}/x@smtp.example.com:587",
        f"smtp://user:{SECRET}@smtp.example.com:587?tls=1",
        f"smtp://:{SECRET}@smtp.example.com:587",
        "smtp://user@smtp.example.com:587",
        f"smtps://user:{SECRET}@[::1:587",
        "file://other-host/var/mail",
        "file://",
    ],
)
def test_a_bad_mail_url_is_refused_by_name_without_its_password(url):
    with pytest.raises(ValueError, match="MAIL_URL") as refused:
        parse_mail_url(url)
    assert SECRET not in str(refused.value)
    assert SECRET.lower() not in str(refused.value).lower()


def test_the_password_is_in_no_description():
    config = parse_mail_url(f"smtp+starttls://apikey:{SECRET}@smtp.example.net:587")
    assert config.password == SECRET
    assert SECRET not in repr(config)
    assert config.describe() == "smtp+starttls://apikey@smtp.example.net:587"
    refused = smtplib.SMTPAuthenticationError(535, f"bad password {SECRET}".encode())
    described = describe_error(refused, config)
    assert described == "SMTPAuthenticationError: 535 bad password ***"
    assert len(describe_error(OSError("x" * 2000), config)) == 500


def test_a_bad_mail_url_stops_the_app_with_one_clear_line(database_url):
    settings = make_settings(database_url, mail_url=f"smtp://user:{SECRET}@host:port")
    with pytest.raises(ConfigurationError, match="MAIL_URL") as refused:
        create_app(settings)
    assert SECRET not in str(refused.value)


# -- building a message -------------------------------------------------------------------


def test_a_row_becomes_a_message_with_its_token_filled_in():
    nonce = "a-nonce"
    outbox_row = OutboxMessage(
        id=7,
        kind="verify",
        to_address="alice@example.com",
        subject="Confirm   your\taddress",
        body_text=f"Open {PUBLIC_URL}/verify-email/{TOKEN_MARK} to confirm.\n",
        body_html=f'<p><a href="{PUBLIC_URL}/verify-email/{TOKEN_MARK}">Confirm</a></p>',
        token_nonce=nonce,
    )
    built = build_message(outbox_row, mailer=MAILER, mail_from=MAIL_FROM)
    parsed = email.message_from_bytes(built.as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    token = link_token(MAILER.token_key, nonce)
    assert parsed["From"] == MAIL_FROM
    assert parsed["To"] == "alice@example.com"
    assert parsed["Subject"] == "Confirm your address"
    assert parsed["Message-ID"].endswith("@accounts.example.com>")
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed["Date"].datetime == outbox_row.created_at.replace(microsecond=0)
    assert links_in(parsed) == [f"{PUBLIC_URL}/verify-email/{token}"]
    html = parsed.get_body(preferencelist=("html",))
    assert html is not None
    assert f"/verify-email/{token}" in str(html.get_content())
    assert TOKEN_MARK not in built.as_string()


# -- backends -----------------------------------------------------------------------------


def test_console_writes_the_whole_message_with_its_links_to_the_log(caplog):
    with caplog.at_level(logging.INFO, logger="webapp.mail"):
        deliver(parse_mail_url("console:"), message("bob@example.com"))
    [record] = [r for r in caplog.records if r.name == "webapp.mail"]
    assert record.levelno == logging.INFO
    logged = record.getMessage()
    assert "To: bob@example.com" in logged
    assert "Subject: Test message from accounts.example.com" in logged
    assert f"the app at {PUBLIC_URL} can send" in logged


def test_file_writes_one_parseable_eml_per_message(tmp_path):
    folder = tmp_path / "not" / "there" / "yet"
    config = parse_mail_url(f"file://{folder}")
    deliver(config, message("one@example.com"))
    deliver(config, message("two@example.com"))
    files = sorted(folder.iterdir())
    assert [path.suffix for path in files] == [".eml", ".eml"]
    recipients = []
    for path in files:
        data = path.read_bytes()
        assert b"\r\n" in data  # RFC 5322 line ends
        parsed = email.message_from_bytes(data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        recipients.append(parsed["To"])
        assert f"the app at {PUBLIC_URL}" in text_of(parsed)
        # Messages hold sign-in links: only the owner may read them.
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(recipients) == ["one@example.com", "two@example.com"]


def test_smtp_plain():
    with smtp_server() as (controller, inbox):
        deliver(parse_mail_url(f"smtp://127.0.0.1:{controller.port}"), message())
        [received] = inbox.wait_for(1)
    assert received["To"] == "alice@example.com"
    assert "MAIL_URL" in text_of(received)


def test_smtp_uses_starttls_when_the_server_offers_it(ca):
    # The server refuses mail before STARTTLS: arriving at all proves it was used.
    with smtp_server(tls_context=server_tls(ca), require_starttls=True) as (controller, inbox):
        config = parse_mail_url(f"smtp://127.0.0.1:{controller.port}")
        deliver(config, message(), ssl_context=client_tls(ca))
        assert len(inbox.wait_for(1)) == 1


def test_starttls_checks_the_certificate(ca):
    # Not the test CA: the system's trust store refuses the server's certificate, and the
    # message is not sent in the clear instead.
    with smtp_server(tls_context=server_tls(ca)) as (controller, inbox):
        config = parse_mail_url(f"smtp://127.0.0.1:{controller.port}")
        with pytest.raises(ssl.SSLCertVerificationError):
            deliver(config, message())
        assert inbox.messages == []


def test_smtp_starttls_with_a_percent_encoded_login(ca):
    seen: list[tuple[bytes, bytes]] = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        assert isinstance(auth_data, LoginPassword)
        seen.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == b"s/e@cret")

    with smtp_server(
        tls_context=server_tls(ca),
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
    ) as (controller, inbox):
        url = f"smtp+starttls://apikey:s%2Fe%40cret@127.0.0.1:{controller.port}"
        deliver(parse_mail_url(url), message(), ssl_context=client_tls(ca))
        assert len(inbox.wait_for(1)) == 1
    assert seen == [(b"apikey", b"s/e@cret")]


def test_smtp_starttls_refuses_a_server_without_starttls():
    with smtp_server() as (controller, inbox):
        config = parse_mail_url(f"smtp+starttls://127.0.0.1:{controller.port}")
        with pytest.raises(DeliveryError, match="STARTTLS"):
            deliver(config, message())
        assert inbox.messages == []


def test_smtps_speaks_tls_from_the_first_byte(ca):
    with smtp_server(ssl_context=server_tls(ca)) as (controller, inbox):
        config = parse_mail_url(f"smtps://127.0.0.1:{controller.port}")
        deliver(config, message(), ssl_context=client_tls(ca))
        assert len(inbox.wait_for(1)) == 1
        # And it is TLS: a plain client gets no greeting it understands.
        with pytest.raises((smtplib.SMTPException, OSError)):
            deliver(parse_mail_url(f"smtp://127.0.0.1:{controller.port}"), message(), timeout=2)


# -- the sender ---------------------------------------------------------------------------


def test_the_sender_delivers_a_queued_row_and_marks_it_sent(db, portal):
    with smtp_server() as (controller, inbox):
        mail = sender(db, f"smtp://127.0.0.1:{controller.port}")
        with running(portal, mail):
            [row_id] = queue(db, to_address="carol@example.com", subject="Welcome")
            [received] = inbox.wait_for(1, timeout=5)
            eventually(lambda: row(db, row_id).sent_at)
    assert received["Subject"] == "Welcome"
    assert received["To"] == "carol@example.com"
    done = row(db, row_id)
    assert done.sent_at is not None
    assert done.sent_at >= done.created_at
    assert (done.attempts, done.leased_until, done.failed_at) == (0, None, None)


def test_a_commit_that_queues_a_message_wakes_the_sender(db, portal):
    with smtp_server() as (controller, inbox):
        # It would not look again for a minute on its own.
        mail = sender(db, f"smtp://127.0.0.1:{controller.port}", poll=60)
        with running(portal, mail):
            queue(db)
            assert len(inbox.wait_for(1, timeout=5)) == 1


def test_wake_from_another_thread(db, database_url, portal):
    other = Database(create_db_engine(database_url))  # another pool: no wake on commit
    try:
        with smtp_server() as (controller, inbox):
            mail = sender(db, f"smtp://127.0.0.1:{controller.port}", poll=60)
            with running(portal, mail):
                queue(other)
                threading.Thread(target=mail.wake).start()
                assert len(inbox.wait_for(1, timeout=5)) == 1
    finally:
        other.dispose()


def test_a_mail_server_outage_retries_and_then_delivers_exactly_once(db, portal):
    port = free_port()  # nothing listens here yet
    mail = sender(db, f"smtp://127.0.0.1:{port}")
    [row_id] = queue(db, subject="Your password was changed")

    first = portal.call(mail.run_once)
    assert (first.claimed, first.sent, first.retrying) == (1, 0, 1)
    waiting = row(db, row_id)
    assert waiting.attempts == 1
    assert waiting.last_error is not None
    assert waiting.last_error.startswith("ConnectionRefusedError")
    assert (waiting.sent_at, waiting.failed_at, waiting.leased_until) == (None, None, None)
    # Backing off: 5 s (±10 %) from the failure.
    assert waiting.next_attempt_at - waiting.created_at >= timedelta(seconds=4.5)
    assert portal.call(mail.run_once).claimed == 0

    with smtp_at(port) as inbox:
        due_now(db, row_id)
        assert portal.call(mail.run_once).sent == 1
        [received] = inbox.wait_for(1)
        for _ in range(3):
            due_now(db, row_id)  # even if it were due again, it is sent
            assert portal.call(mail.run_once).claimed == 0
        assert len(inbox.messages) == 1
    assert received["Subject"] == "Your password was changed"
    done = row(db, row_id)
    assert done.sent_at is not None
    assert done.attempts == 1


@contextmanager
def hanging_up(port: int) -> Iterator[list[None]]:
    """A server that accepts connections and closes them at once; counts them."""
    accepted: list[None] = []
    listener = socket.create_server(("127.0.0.1", port))
    listener.settimeout(0.05)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(None)
            connection.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield accepted
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def test_a_batch_backs_off_together_and_goes_at_once_when_the_server_is_back(db, portal):
    port = free_port()
    mail = sender(db, f"smtp://127.0.0.1:{port}")
    backlog = queue(db, 3)
    with hanging_up(port) as accepted:
        assert portal.call(mail.run_once).retrying == 3
    # One connection, not one per message (nor a timeout each with a silent server).
    assert len(accepted) == 1
    for row_id in backlog:
        waiting = row(db, row_id)
        assert waiting.attempts == 1
        assert waiting.last_error is not None
        assert waiting.last_error.startswith("SMTPServerDisconnected")
        assert waiting.next_attempt_at > waiting.created_at
    with smtp_at(port) as inbox:
        queue(db, 1, to_address="new@example.com")
        # The new message gets through: the server is back, so the backlog is due now,
        # not at its back-off time.
        assert portal.call(mail.run_once).sent == 1
        assert portal.call(mail.run_once).sent == 3
        assert len(inbox.wait_for(4)) == 4
    assert str(inbox.messages[0]["To"]) == "new@example.com"


def test_the_back_off_doubles_up_to_an_hour_with_a_little_jitter():
    for attempts, base in [(1, 5), (2, 10), (3, 20), (10, 2560), (11, 3600), (40, 3600)]:
        delays = [retry_delay(attempts) for _ in range(50)]
        assert all(base * 0.9 <= delay <= base * 1.1 for delay in delays), (attempts, delays)
    assert len({retry_delay(1) for _ in range(50)}) > 1


def test_after_a_day_of_failures_the_sender_gives_up_and_says_so(db, portal, caplog):
    mail = sender(db, f"smtp://127.0.0.1:{free_port()}")
    [row_id] = queue(
        db, kind="reset", body_text=f"{PUBLIC_URL}/password-reset/{TOKEN_MARK}", token_nonce="n1"
    )
    day_ago = row(db, row_id).created_at - timedelta(days=1)
    change(db, row_id, created_at=day_ago, next_attempt_at=day_ago, attempts=30)
    with caplog.at_level(logging.ERROR, logger="webapp.mail"):
        done = portal.call(mail.run_once)
    assert done.given_up == 1
    given_up = row(db, row_id)
    assert given_up.failed_at is not None
    assert given_up.attempts == 31
    assert given_up.sent_at is None
    [record] = [r for r in caplog.records if r.name == "webapp.mail"]
    assert record.levelno == logging.ERROR
    assert f"e-mail {row_id} (reset)" in record.getMessage()
    assert link_token(MAILER.token_key, "n1") not in caplog.text
    assert "password-reset" not in caplog.text
    # Never tried again.
    assert portal.call(mail.run_once).claimed == 0
    status = mail_status(db)
    assert (status["pending"], status["failed"]) == (0, 1)
    assert status["last_error"] is not None
    assert status["last_error"].startswith("ConnectionRefusedError")


def test_a_row_leased_by_another_sender_is_left_alone_until_its_lease_ends(db, portal):
    with smtp_server() as (controller, inbox):
        mail = sender(db, f"smtp://127.0.0.1:{controller.port}")
        [row_id] = queue(db)
        created = row(db, row_id).created_at
        change(db, row_id, leased_until=created + timedelta(days=1))
        assert portal.call(mail.run_once).claimed == 0
        change(db, row_id, leased_until=created - timedelta(seconds=1))  # ran out
        assert portal.call(mail.run_once).sent == 1
        assert len(inbox.wait_for(1)) == 1


def test_two_senders_on_one_database_never_send_a_row_twice(db, database_url, portal):
    databases = [Database(create_db_engine(database_url)) for _ in range(2)]  # two instances
    try:
        with smtp_server() as (controller, inbox):
            url = f"smtp://127.0.0.1:{controller.port}"
            senders = [sender(database, url, poll=0.02, batch=3) for database in databases]
            with running(portal, *senders):
                ids = queue(db, 20)
                inbox.wait_for(20)
                for each in senders:  # more passes: nothing left to send
                    assert portal.call(each.run_once).claimed == 0
    finally:
        for database in databases:
            database.dispose()
    assert sorted(str(m["To"]) for m in inbox.messages) == sorted(
        f"user{index}@example.com" for index in range(20)
    )
    assert all(row(db, row_id).sent_at is not None for row_id in ids)


def test_many_passes_at_once_claim_each_row_once(db, database_url):
    databases = [Database(create_db_engine(database_url)) for _ in range(2)]
    try:
        with smtp_server() as (controller, inbox):
            url = f"smtp://127.0.0.1:{controller.port}"
            queue(db, 20)
            for _ in range(10):  # waves of 6 simultaneous passes, 3 rows each at most
                senders = [sender(databases[i % 2], url, batch=3) for i in range(6)]

                def one_pass(index: int, senders: list[MailSender] = senders) -> Pass:
                    return anyio.run(senders[index].run_once)

                passes = at_once(6, one_pass)
                if sum(p.claimed for p in passes) == 0:
                    break
            assert len(inbox.messages) == 20
    finally:
        for each in databases:
            each.dispose()
    assert len({str(m["To"]) for m in inbox.messages}) == 20
    assert mail_status(db)["pending"] == 0


def test_database_trouble_is_logged_once_and_never_ends_the_sender(tmp_path, portal, caplog):
    # A database file in a folder that does not exist: every pass fails.
    broken = Database(create_db_engine(f"sqlite:///{tmp_path / 'absent' / 'x.db'}"))
    mail = sender(broken, "console:", poll=0.01)
    try:
        with caplog.at_level(logging.WARNING, logger="webapp.mail"), running(portal, mail):
            eventually(lambda: "cannot be read" in caplog.text)
            time.sleep(0.1)  # ten more failing polls
            mail.wake()
        warnings = [r for r in caplog.records if r.name == "webapp.mail"]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert "OperationalError" in warnings[0].getMessage()
    finally:
        broken.dispose()


def test_the_app_starts_and_stops_its_sender(db, database_url):
    with smtp_server() as (controller, inbox):
        settings = make_settings(database_url, mail_url=f"smtp://127.0.0.1:{controller.port}")
        app = create_app(settings)
        services = app.state.services
        with TestClient(app):
            with services.db.writing() as session:
                session.add(
                    OutboxMessage(
                        kind="verify",
                        to_address="dave@example.com",
                        subject="Confirm your address",
                        body_text=f"{services.mailer.link('/verify-email/' + TOKEN_MARK)}\n",
                        token_nonce="nonce-1",
                    )
                )
            [received] = inbox.wait_for(1, timeout=5)
        services.db.dispose()
    token = link_token(services.mailer.token_key, "nonce-1")
    assert links_in(received) == [f"http://localhost:8000/verify-email/{token}"]
    assert received["From"] == settings.mail_from


def test_median_time_from_queue_to_mail_server(db, portal):
    """Not a timing assertion: prints the figure (run with -s to see it)."""
    with smtp_server() as (controller, inbox):
        mail = sender(db, f"smtp://127.0.0.1:{controller.port}")
        with running(portal, mail):
            took = []
            for index in range(20):
                started = time.perf_counter()
                queue(db)
                inbox.wait_for(index + 1)
                took.append(time.perf_counter() - started)
    backend = db.engine.dialect.name
    median = statistics.median(took) * 1000
    print(f"\n{backend}: from queue to mail server, median of 20: {median:.1f} ms")


# -- python -m webapp mail ------------------------------------------------------------------


def webapp(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webapp", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_mail_status_counts_pending_and_failed_and_shows_errors(db, database_url, portal):
    mail = sender(db, f"smtp://127.0.0.1:{free_port()}")
    first, second = queue(db, 2, kind="verify")
    portal.call(mail.run_once)
    day_ago = row(db, second).created_at - timedelta(days=1)
    change(db, second, created_at=day_ago, next_attempt_at=day_ago)
    portal.call(mail.run_once)
    result = webapp("mail", "status", env=base_env(database_url))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "pending: 1" in lines
    assert "failed (given up after a day): 1" in lines
    assert any(line.startswith("oldest pending: 20") for line in lines), lines
    retrying = f"#{first} verify, 1 attempts, retrying: ConnectionRefusedError"
    assert any(line.strip().startswith(retrying) for line in lines), lines
    assert any(f"#{second} verify, 2 attempts, given up" in line for line in lines)


def test_mail_send_test_delivers_now(tmp_path):
    with smtp_server() as (controller, inbox):
        env = base_env(
            f"sqlite:///{tmp_path / 'x.db'}", MAIL_URL=f"smtp://127.0.0.1:{controller.port}"
        )
        result = webapp("mail", "send-test", "ops@example.com", env=env)
        assert result.returncode == 0, result.stderr
        [received] = inbox.wait_for(1)
    assert "sent a test message to ops@example.com" in result.stdout
    assert received["To"] == "ops@example.com"


def test_mail_send_test_reports_a_failure_without_the_password(tmp_path):
    env = base_env(
        f"sqlite:///{tmp_path / 'x.db'}",
        MAIL_URL=f"smtp://ops:{SECRET}@127.0.0.1:{free_port()}",
    )
    result = webapp("mail", "send-test", "ops@example.com", env=env)
    assert result.returncode == 1
    assert "ConnectionRefusedError" in result.stderr
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stdout + result.stderr
    bad = webapp(
        "mail", "send-test", "ops@example.com", env=env | {"MAIL_URL": f"smtp://u:{SECRET}@h:x"}
    )
    assert bad.returncode == 1
    assert "MAIL_URL" in bad.stderr
    assert SECRET not in bad.stdout + bad.stderr


def test_check_reports_a_bad_mail_url_without_its_password(tmp_path):
    env = base_env(f"sqlite:///{tmp_path / 'x.db'}", MAIL_URL=f"smtp://u:{SECRET}@host:x")
    result = webapp("check", env=env)
    assert result.returncode == 1
    assert any(
        line.startswith("problem: MAIL_URL has a port") for line in result.stderr.splitlines()
    ), result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_mail_inbox_prints_what_it_receives(tmp_path):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "webapp", "mail", "inbox", "--port", str(port)],
        cwd=ROOT,
        env=base_env(f"sqlite:///{tmp_path / 'x.db'}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def listening() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0

        eventually(listening, timeout=30)
        deliver(parse_mail_url(f"smtp://127.0.0.1:{port}"), message("eve@example.com"))
    finally:
        process.send_signal(2)  # Ctrl-C
        out, err = process.communicate(timeout=10)
    assert "To: eve@example.com" in out, err
    assert f"the app at {PUBLIC_URL} can send" in out
