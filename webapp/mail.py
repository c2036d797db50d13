"""E-mail delivery: the backends `MAIL_URL` chooses, and the sender that empties the outbox.

`MAIL_URL` is `console:` (each message written to the log: the development default),
`file:///a/folder` (one RFC 5322 `.eml` file per message), `smtp://[user:password@]host:port`
(STARTTLS when the server offers it), `smtp+starttls://…` (STARTTLS required) or
`smtps://…` (TLS from the first byte). Certificates are verified with the system's CAs.

`MailSender` runs in the app's lifespan. Every `POLL` seconds, or as soon as a transaction
that queued a message commits in this process, it claims due rows of the outbox in one
short transaction (a lease, plus `FOR UPDATE SKIP LOCKED` on PostgreSQL), delivers them
outside any transaction on a low-priority thread, and records the pass's outcomes in one
transaction. Failures are retried with exponential back-off for a day, then given up. Any
number of workers and instances can run it on one database: a row is leased by one at a
time. Delivery is at least once: a message whose success could not be recorded (the
database went away just then) is sent again once its lease runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import functools
import ipaddress
import logging
import os
import secrets
import smtplib
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any, Literal, TypedDict
from urllib.parse import unquote, urlsplit

from sqlalchemy import bindparam, event, func, or_, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Mapper, object_session
from sqlmodel import Session, SQLModel, col, select

from webapp.db import Database
from webapp.domain.outbox import QUEUED, Mailer
from webapp.domain.passwords import lower_priority
from webapp.models import OutboxMessage, utcnow
from webapp.settings import Settings

logger = logging.getLogger("webapp.mail")

Backend = Literal["console", "file", "smtp", "smtp+starttls", "smtps"]
# Default ports: SMTP relay, submission with STARTTLS, submission over TLS.
DEFAULT_PORTS: dict[str, int] = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}
URL_FORMS = (
    "console:, file:///folder, smtp://[user:password@]host:port, smtp+starttls://… or smtps://…"
)

POLL = 1.0  # seconds between looks at the outbox when nobody wakes the sender
LEASE = 60.0  # seconds a claimed row belongs to one sender
BATCH = 20  # rows claimed at a time
SMTP_TIMEOUT = 10.0  # seconds, for each network operation of one delivery
FIRST_RETRY = 5.0  # seconds; doubled at each failure...
LONGEST_RETRY = 3600.0  # ...up to an hour
GIVE_UP = timedelta(days=1)
ERROR_LENGTH = 500


# What a mail server that is down, or unreachable, raises (not: a refusal, a bad certificate).
UNREACHABLE: tuple[type[Exception], ...] = (
    ConnectionError,
    TimeoutError,
    socket.gaierror,
    smtplib.SMTPConnectError,
    smtplib.SMTPServerDisconnected,
)


class DeliveryError(Exception):
    """The mail server could not be used as MAIL_URL demands."""


@dataclass(frozen=True, slots=True)
class MailConfig:
    """What `MAIL_URL` says: the backend and, for SMTP, where and as whom."""

    backend: Backend
    host: str = ""
    port: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    folder: Path | None = None

    def describe(self) -> str:
        """The URL without its password, for messages to the operator."""
        if self.backend == "console":
            return "console:"
        if self.backend == "file":
            return f"file://{self.folder}"
        user = f"{self.username}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.backend}://{user}{host}:{self.port}"


def parse_mail_url(url: str) -> MailConfig:
    """Read MAIL_URL; a ValueError names MAIL_URL and never repeats the password."""
    url = url.strip()
    if not url:
        raise ValueError(f"MAIL_URL is not set; it must be one of {URL_FORMS}")
    scheme, colon, rest = url.partition(":")
    scheme = scheme.lower()
    if scheme == "console" and colon:
        if rest not in ("", "//"):
            raise ValueError("MAIL_URL console: takes nothing after the colon")
        return MailConfig(backend="console")
    if not colon or scheme not in ("file", *DEFAULT_PORTS):
        # Nothing of the value is repeated: a mistyped URL may hold a password anywhere.
        raise ValueError(f"MAIL_URL must be one of {URL_FORMS}")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValueError(f"MAIL_URL is not a valid URL; it must be one of {URL_FORMS}") from None
    if scheme == "file":
        folder = unquote(parts.path)
        if parts.netloc not in ("", "localhost") or not folder or parts.query or parts.fragment:
            raise ValueError("MAIL_URL file: must name a folder, as in file:///var/mail/outbox")
        return MailConfig(backend="file", folder=Path(folder))
    special = "percent-encode / ? # @ : in the user name and password (%2F %3F %23 %40 %3A)"
    form = f"{scheme}://[user:password@]host:port"
    if not rest.startswith("//"):
        raise ValueError(f"MAIL_URL must look like {form}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(
            f"MAIL_URL has a port that is not a number from 0 to 65535 ({form}; {special})"
        ) from None
    if not parts.hostname:
        raise ValueError(f"MAIL_URL names no host ({form})")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"MAIL_URL takes nothing after host:port ({form}; {special})")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if password is not None and not username:
        raise ValueError(f"MAIL_URL has a password but no user name ({form})")
    if username and not password:
        raise ValueError(f"MAIL_URL has a user name but no password ({form})")
    return MailConfig(
        backend=scheme,  # type: ignore[arg-type]  # one of DEFAULT_PORTS' keys
        host=parts.hostname,
        port=port or DEFAULT_PORTS[scheme],
        username=username,
        password=password,
    )


# -- building messages --------------------------------------------------------------------


def host_of(public_url: str) -> str:
    """The host of PUBLIC_URL: the Message-ID's domain and the name we greet servers with."""
    return urlsplit(public_url).hostname or "localhost"


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class _HeaderClasses(HeaderRegistry):
    """The standard library's header registry, but each header's class is made once: the
    stock one builds a new class for every header of every message, some 40 % of the
    cost of building one."""

    @functools.cache  # noqa: B019 (one instance, kept for the life of the process)
    def __getitem__(self, name: str) -> type[BaseHeader]:
        return super().__getitem__(name)


# email.policy.default, with the header classes above: the messages are the same.
POLICY = email.policy.default.clone(header_factory=_HeaderClasses())


def build_message(row: OutboxMessage, *, mailer: Mailer, mail_from: str) -> EmailMessage:
    """The e-mail for an outbox row, its link tokens filled in (they never touch the table)."""
    message = EmailMessage(policy=POLICY)
    message["From"] = mail_from
    message["To"] = row.to_address
    message["Subject"] = " ".join(row.subject.split())
    # When the change happened, even if the mail server was down for a while.
    message["Date"] = format_datetime(_aware(row.created_at))
    message["Message-ID"] = make_msgid(domain=host_of(mailer.public_url))
    # RFC 3834: out-of-office replies and the like are not sent back to us.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(mailer.finish(row.body_text, row.token_nonce))
    if row.body_html:
        message.add_alternative(mailer.finish(row.body_html, row.token_nonce), subtype="html")
    return message


def sample_message(*, to: str, mail_from: str, public_url: str) -> EmailMessage:
    """The message `python -m webapp mail send-test` sends."""
    message = EmailMessage(policy=POLICY)
    message["From"] = mail_from
    message["To"] = to
    message["Subject"] = f"Test message from {host_of(public_url)}"
    message["Date"] = format_datetime(utcnow())
    message["Message-ID"] = make_msgid(domain=host_of(public_url))
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(
        "This is a test message from `python -m webapp mail send-test`.\n\n"
        f"It reached you, so the app at {public_url} can send e-mail with its MAIL_URL.\n"
    )
    return message


# -- delivering one message ---------------------------------------------------------------


def deliver(
    config: MailConfig,
    message: EmailMessage,
    *,
    timeout: float = SMTP_TIMEOUT,
    ssl_context: ssl.SSLContext | None = None,
    local_hostname: str | None = None,
) -> None:
    """Send one message now; blocking, so call it from a worker thread. Raises on failure.

    `ssl_context` replaces the default (system CAs, host name checked), for tests;
    `local_hostname` is the name given in EHLO (default: this machine's).
    """
    if config.backend == "console":
        _to_log(message)
    elif config.backend == "file":
        assert config.folder is not None
        _to_file(config.folder, message)
    else:
        _to_smtp(config, message, timeout, ssl_context, local_hostname)


def _text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    return str(part.get_content()) if isinstance(part, EmailMessage) else ""


def _to_log(message: EmailMessage) -> None:
    # console: is for development: make sure the message reaches the terminal even when
    # nothing configured logging (uvicorn configures only its own loggers).
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    if not logger.hasHandlers():
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s %(message)s"))
        logger.addHandler(handler)
    headers = "\n".join(
        f"{name}: {message[name]}" for name in ("From", "To", "Subject", "Date") if message[name]
    )
    logger.info(
        "e-mail, not sent (MAIL_URL is console:)\n%s\n\n%s", headers, _text_of(message).rstrip()
    )


def _to_file(folder: Path, message: EmailMessage) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{utcnow():%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(4)}.eml"
    partial = folder / f".{name}.partial"
    # Only the owner may read it (the links in it sign people in), and a reader watching
    # the folder never sees half a file.
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(message.as_bytes(policy=email.policy.SMTP))
    partial.replace(folder / name)


@functools.cache
def _system_tls() -> ssl.SSLContext:
    # Loading the system's CAs takes some 20 ms: once per process, not once per message.
    return ssl.create_default_context()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _to_smtp(
    config: MailConfig,
    message: EmailMessage,
    timeout: float,
    ssl_context: ssl.SSLContext | None,
    local_hostname: str | None,
) -> None:
    context = ssl_context or _system_tls()
    client: smtplib.SMTP
    if config.backend == "smtps":
        client = smtplib.SMTP_SSL(
            config.host, config.port, local_hostname, timeout=timeout, context=context
        )
    else:
        client = smtplib.SMTP(config.host, config.port, local_hostname, timeout=timeout)
    try:
        client.ehlo()
        if config.backend != "smtps":
            if client.has_extn("starttls"):
                # The certificate is checked like any other: a bad one is an error, never
                # a reason to carry on in the clear.
                client.starttls(context=context)
                client.ehlo()
            elif config.backend == "smtp+starttls":
                raise DeliveryError(
                    f"the server at {config.host}:{config.port} does not offer STARTTLS, "
                    "which MAIL_URL smtp+starttls:// requires"
                )
            elif config.username and not _is_loopback(config.host):
                raise DeliveryError(
                    f"the server at {config.host}:{config.port} does not offer STARTTLS: "
                    "refusing to send the MAIL_URL password unencrypted"
                )
        if config.username:
            client.login(config.username, config.password or "")
        client.send_message(message)
        # Sent: a failing QUIT must not make it look unsent (and be sent again).
        with contextlib.suppress(smtplib.SMTPException, OSError):
            client.quit()
    finally:
        client.close()


def describe_error(exc: BaseException, config: MailConfig | None = None) -> str:
    """The exception's class and a short message, without credentials, at most 500 chars."""
    if isinstance(exc, smtplib.SMTPResponseException):
        reply = exc.smtp_error
        text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
        detail = f"{exc.smtp_code} {text}"
    elif isinstance(exc, smtplib.SMTPRecipientsRefused):
        detail = "; ".join(
            f"{address}: {code} {reply.decode(errors='replace')}"
            for address, (code, reply) in exc.recipients.items()
        )
    else:
        detail = str(exc)
    if config is not None and config.password:
        detail = detail.replace(config.password, "***")
    return " ".join(f"{type(exc).__name__}: {detail}".split())[:ERROR_LENGTH]


def send_test(
    settings: Settings,
    to: str,
    *,
    timeout: float = SMTP_TIMEOUT,
    ssl_context: ssl.SSLContext | None = None,
) -> MailConfig:
    """Deliver a test message to `to` right now with MAIL_URL; returns the backend used.

    Raises ValueError for a bad MAIL_URL and whatever the delivery raises."""
    config = parse_mail_url(settings.mail_url)
    message = sample_message(to=to, mail_from=settings.mail_from, public_url=settings.public_url)
    deliver(
        config,
        message,
        timeout=timeout,
        ssl_context=ssl_context,
        local_hostname=host_of(settings.public_url),
    )
    return config


# -- the outbox's state -------------------------------------------------------------------


class QueuedError(TypedDict):
    id: int
    kind: str
    attempts: int
    given_up: bool
    error: str


class MailStatus(TypedDict):
    pending: int
    failed: int
    oldest_pending: datetime | None
    last_error: str | None
    recent_errors: list[QueuedError]


def mail_status(db: Database, *, errors: int = 5) -> MailStatus:
    """How the outbox stands: pending and given-up counts, the oldest pending, recent errors.

    Synchronous (for the command line); from the event loop use `db.read(mail_status, db)`.
    """
    unsent = col(OutboxMessage.sent_at).is_(None)
    pending = unsent & col(OutboxMessage.failed_at).is_(None)
    with db.reading() as session:
        count, oldest = session.exec(
            select(func.count(), func.min(OutboxMessage.created_at)).where(pending)
        ).one()
        failed = session.exec(
            select(func.count()).where(unsent, col(OutboxMessage.failed_at).is_not(None))
        ).one()
        rows = session.exec(
            select(OutboxMessage)
            .where(unsent, col(OutboxMessage.last_error).is_not(None))
            .order_by(col(OutboxMessage.id).desc())
            .limit(errors)
        ).all()
    recent: list[QueuedError] = [
        {
            "id": row.id or 0,
            "kind": row.kind,
            "attempts": row.attempts,
            "given_up": row.failed_at is not None,
            "error": row.last_error or "",
        }
        for row in rows
    ]
    return {
        "pending": count,
        "failed": failed,
        "oldest_pending": _aware(oldest) if oldest else None,
        "last_error": recent[0]["error"] if recent else None,
        "recent_errors": recent,
    }


# -- the sender ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Outcome:
    id: int
    kind: str
    lease: datetime
    attempts: int  # before this one
    created_at: datetime
    error: str | None  # None: sent
    unreachable: bool = False  # the server did not answer at all


Recorded = Literal["sent", "retrying", "given_up", "lost"]
# The statements of every pass, built once.
_outbox = SQLModel.metadata.tables["outbox"]
_LEASE = (
    update(_outbox)
    .where(_outbox.c.id.in_(bindparam("ids", expanding=True)))
    .values(leased_until=bindparam("lease"))
)
_SENT = (
    update(_outbox)
    .where(_outbox.c.id.in_(bindparam("ids", expanding=True)), _outbox.c.sent_at.is_(None))
    .values(sent_at=bindparam("now"), leased_until=None)
)


@dataclass(slots=True)
class Pass:
    """What one pass over the outbox did."""

    claimed: int = 0
    sent: int = 0
    retrying: int = 0
    given_up: int = 0


# Two low-priority threads (nice 19, like bcrypt's) per worker for building and sending.
_MAIL_THREADS = ThreadPoolExecutor(
    max_workers=2, thread_name_prefix="mail", initializer=lower_priority
)


def _build_and_deliver(
    config: MailConfig,
    row: OutboxMessage,
    mailer: Mailer,
    mail_from: str,
    timeout: float,
    ssl_context: ssl.SSLContext | None,
    local_hostname: str | None,
) -> None:
    message = build_message(row, mailer=mailer, mail_from=mail_from)
    deliver(
        config,
        message,
        timeout=timeout,
        ssl_context=ssl_context,
        local_hostname=local_hostname,
    )


def retry_delay(attempts: int) -> float:
    """Seconds before the next try after `attempts` failures: 5, 10, 20, … up to an hour,
    each ±10 % so that a queue that failed together does not retry together."""
    delay = min(FIRST_RETRY * 2.0 ** min(max(attempts - 1, 0), 20), LONGEST_RETRY)
    return delay * (0.9 + secrets.randbelow(201) / 1000)


class MailSender:
    """Delivers the outbox in the background; started and stopped by the app's lifespan.

    `wake()` (from any thread) makes it look at once; a commit that queued a message in
    this process wakes it by itself. `run_once()` is one pass, for tests and tools.
    """

    def __init__(
        self,
        db: Database,
        *,
        config: MailConfig | None,
        mailer: Mailer,
        mail_from: str,
        poll: float = POLL,
        lease: float = LEASE,
        batch: int = BATCH,
        timeout: float = SMTP_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.db = db
        self.config = config
        self.mailer = mailer
        self.mail_from = mail_from
        self.poll = poll
        self.lease = lease
        self.batch = batch
        # Built once: the sender looks at least once a second.
        self._due = (
            select(OutboxMessage)
            .where(
                col(OutboxMessage.sent_at).is_(None),
                col(OutboxMessage.failed_at).is_(None),
                col(OutboxMessage.next_attempt_at) <= bindparam("now"),
                or_(
                    col(OutboxMessage.leased_until).is_(None),
                    col(OutboxMessage.leased_until) < bindparam("now"),
                ),
            )
            .order_by(col(OutboxMessage.id))
            .limit(batch)
            # PostgreSQL: rows another sender is claiming right now are passed over.
            # SQLite ignores this; its BEGIN IMMEDIATE lets one writer in at a time.
            .with_for_update(skip_locked=True)
        )
        self.timeout = timeout
        self.ssl_context = ssl_context
        self._local_hostname = host_of(mailer.public_url)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock: asyncio.Lock | None = None
        self._stopping = False
        # Outcomes the database did not take yet (it was down): recorded at the next pass.
        self._unrecorded: list[_Outcome] = []
        self._troubled = False
        # The mail server stopped answering since our last success: when it answers again,
        # everything backing off is due at once, not up to an hour later.
        self._outage = False
        # ...and it has answered again: recorded with the outcomes of this pass.
        self._back = False

    # -- lifecycle

    async def start(self) -> None:
        if self.config is None:
            logger.warning("MAIL_URL is not set: e-mails wait in the outbox until it is")
            return
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="mail-sender")
        _listen(self)

    async def stop(self) -> None:
        """Finish the message in hand (for at most the SMTP timeout), then stop."""
        _unlisten(self)
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self.wake()
        try:
            await asyncio.wait_for(asyncio.shield(task), self.timeout + 5)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def wake(self) -> None:
        """Look at the outbox now rather than at the next poll. Safe from any thread."""
        loop, wakeup = self._loop, self._wakeup
        if loop is None or wakeup is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed: nothing to wake
            loop.call_soon_threadsafe(wakeup.set)

    async def _run(self) -> None:
        assert self._wakeup is not None
        while not self._stopping:
            self._wakeup.clear()
            done = Pass()
            try:
                done = await self.run_once()
            except Exception as exc:
                # The database is down or slow: say so once, try again at the next poll.
                if not self._troubled:
                    logger.warning("the outbox cannot be read or updated: %s", describe_error(exc))
                self._troubled = True
            else:
                if self._troubled:
                    logger.warning("the outbox can be used again")
                self._troubled = False
            if self._stopping:
                break
            if done.claimed < self.batch:  # a full batch: more may be due at once
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self.poll)

    # -- one pass

    async def run_once(self) -> Pass:
        """Claim what is due, deliver it, record the outcomes (one transaction)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            done = Pass()
            # What an earlier pass could not record (the database was down) goes first.
            await self._record_pending(done)
            rows = await self.db.write(self._claim)
            done.claimed = len(rows)
            started = time.monotonic()
            down: str | None = None  # why the server could not be reached in this pass
            for index, row in enumerate(rows):
                # Never deliver a row whose lease may have run out: another sender may
                # have claimed it by now.
                if self._stopping or time.monotonic() - started > self.lease / 2:
                    await self._release(rows[index:])
                    break
                # One server that does not answer is enough: the rest of the batch backs off
                # with it rather than wait for a timeout each.
                outcome = await self._attempt(row, down=down)
                down = outcome.error if outcome.unreachable else None
                self._unrecorded.append(outcome)
                if outcome.unreachable:
                    self._outage = True
                    self._back = False
                elif outcome.error is None and self._outage:
                    self._back = True
            # Every outcome of the pass in one transaction, well inside the rows' lease.
            await self._record_pending(done)
            return done

    def _claim(self) -> list[tuple[OutboxMessage, datetime]]:
        now = utcnow()
        lease = now + timedelta(seconds=self.lease)
        with self.db.writing() as session:
            rows = session.scalars(self._due, {"now": now}).all()
            ids = [row.id for row in rows]
            if ids:
                session.execute(_LEASE, {"ids": ids, "lease": lease})
        return [(row, lease) for row in rows]

    async def _attempt(
        self, claimed: tuple[OutboxMessage, datetime], *, down: str | None = None
    ) -> _Outcome:
        """Deliver one row; with `down` (the server did not answer a moment ago), fail
        it with that error without trying."""
        row, lease = claimed
        assert row.id is not None
        error, unreachable = down, down is not None
        if down is None:
            try:
                if self.config is None:
                    raise DeliveryError("MAIL_URL is not set")
                # Building the message (a few ms of the email package) and talking SMTP
                # both happen on a low-priority thread: a burst of notices never takes
                # the CPU from the event loop or from requests.
                await asyncio.wrap_future(
                    _MAIL_THREADS.submit(
                        _build_and_deliver,
                        self.config,
                        row,
                        self.mailer,
                        self.mail_from,
                        self.timeout,
                        self.ssl_context,
                        self._local_hostname,
                    )
                )
            except Exception as exc:
                error = describe_error(exc, self.config)
                unreachable = isinstance(exc, UNREACHABLE)
        return _Outcome(
            id=row.id,
            kind=row.kind,
            lease=lease,
            attempts=row.attempts,
            created_at=_aware(row.created_at),
            error=error,
            unreachable=unreachable,
        )

    async def _record_pending(self, done: Pass) -> None:
        if not self._unrecorded and not self._back:
            return
        outcomes, back = list(self._unrecorded), self._back
        results = await self.db.write(self._record, outcomes, back)
        del self._unrecorded[: len(outcomes)]
        if back:
            # The server answers again: what was backing off is due now, in another pass
            # as soon as this one ends.
            self._outage = self._back = False
            self.wake()
        for outcome, result in zip(outcomes, results, strict=True):
            if outcome.error is None:
                done.sent += 1
            elif result == "given_up":
                done.given_up += 1
                logger.error(
                    "gave up on e-mail %d (%s) after %d attempts over a day: %s",
                    outcome.id,
                    outcome.kind,
                    outcome.attempts + 1,
                    outcome.error,
                )
            else:
                done.retrying += 1

    def _record(self, outcomes: list[_Outcome], backlog_due: bool) -> list[Recorded]:
        """Record outcomes, in one transaction; with `backlog_due`, everything backing off
        becomes due now."""
        now = utcnow()
        unsent = col(OutboxMessage.sent_at).is_(None)
        results: list[Recorded] = []
        with self.db.writing() as session:
            sent = [outcome.id for outcome in outcomes if outcome.error is None]
            if sent:
                # Sent is sent, even if the lease ran out meanwhile.
                session.execute(_SENT, {"ids": sent, "now": now})
            for outcome in outcomes:
                if outcome.error is None:
                    results.append("sent")
                    continue
                attempts = outcome.attempts + 1
                values: dict[str, Any] = {
                    "attempts": attempts,
                    "last_error": outcome.error,
                    "leased_until": None,
                }
                given_up = now - outcome.created_at >= GIVE_UP
                if given_up:
                    values["failed_at"] = now
                else:
                    values["next_attempt_at"] = now + timedelta(seconds=retry_delay(attempts))
                result = session.execute(
                    update(OutboxMessage)
                    .where(
                        col(OutboxMessage.id) == outcome.id,
                        unsent,
                        col(OutboxMessage.leased_until) == outcome.lease,
                    )
                    .values(**values),
                    execution_options={"synchronize_session": False},
                )
                assert isinstance(result, CursorResult)
                if result.rowcount != 1:
                    # The lease ran out and another sender has the row now.
                    results.append("lost")
                else:
                    results.append("given_up" if given_up else "retrying")
            if backlog_due:
                session.execute(
                    update(OutboxMessage)
                    .where(
                        unsent,
                        col(OutboxMessage.failed_at).is_(None),
                        col(OutboxMessage.attempts) > 0,
                        col(OutboxMessage.next_attempt_at) > now,
                    )
                    .values(next_attempt_at=now),
                    execution_options={"synchronize_session": False},
                )
        return results

    async def _release(self, rows: list[tuple[OutboxMessage, datetime]]) -> None:
        """Hand rows claimed but not tried back at once, rather than when their lease ends."""
        try:
            await self.db.write(self._unlease, [(row.id, lease) for row, lease in rows])
        except Exception as exc:
            logger.warning("could not hand back claimed e-mails: %s", describe_error(exc))

    def _unlease(self, leases: list[tuple[int, datetime]]) -> None:
        with self.db.writing() as session:
            for row_id, lease in leases:
                session.execute(
                    update(OutboxMessage)
                    .where(
                        col(OutboxMessage.id) == row_id,
                        col(OutboxMessage.leased_until) == lease,
                    )
                    .values(leased_until=None)
                )


# -- waking the sender when a message is queued -------------------------------------------
#
# A transaction that queues a message marks its session (Mailer.enqueue does, and so does
# an OutboxMessage added through the ORM); when that session commits,
# the running senders of the same engine are woken, so a message leaves within
# milliseconds instead of at the next poll. Commits happen in worker threads: wake() is
# thread-safe. The tuple is replaced, never changed, so the threads can read it unlocked.

_senders: tuple[MailSender, ...] = ()


def _listen(sender: MailSender) -> None:
    global _senders
    _senders = (*_senders, sender)


def _unlisten(sender: MailSender) -> None:
    global _senders
    _senders = tuple(s for s in _senders if s is not sender)


@event.listens_for(OutboxMessage, "after_insert")
def _queued(_mapper: Mapper[Any], _connection: Any, target: OutboxMessage) -> None:
    session = object_session(target)
    if session is not None:
        session.info[QUEUED] = True


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    if not _senders or not session.info.pop(QUEUED, False):
        return
    pool = getattr(session.get_bind(), "pool", None)
    for sender in _senders:
        if sender.db.engine.pool is pool:
            sender.wake()
