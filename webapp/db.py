"""The database engine and transaction scopes.

Every database operation has a deadline: `Database.read` and `Database.write` run a
synchronous function in a worker thread and give up waiting at `read_deadline` /
`write_deadline` (503). A read left behind is harmless. A write left behind is a
transaction whose outcome is unknown: it commits or rolls back as a whole, and on
PostgreSQL `statement_timeout`, `lock_timeout`, `idle_in_transaction_session_timeout`
and TCP keepalives / `tcp_user_timeout` end it on the server's side, so no lock
outlives it. Everything else here is synchronous: call it from those threads."""

from __future__ import annotations

import asyncio
import functools
import os
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, StatementError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.types import TypeEngine
from sqlmodel import Session


# What a lost, unreachable, locked, full or read-only database raises; the app answers
# these with 503.
class DeadlineExceeded(Exception):
    """The database did not finish within the deadline (a read, or a write)."""


class StorageFull(Exception):
    """The SQLite file's disk has (almost) no room left."""


UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    PoolTimeoutError,
    DeadlineExceeded,
    StorageFull,
)
# Below this much free space beside an SQLite file (1 MiB), /healthz calls the disk full:
# SQLite reuses its WAL, so a small write can still pass on a disk that is out of room.
MIN_FREE_BYTES = 1024 * 1024

T = TypeVar("T")

Unavailability = Literal["unreachable", "read_only", "disk_full"]


def unavailability(exc: BaseException) -> Unavailability:
    """Why the database could not be used, as far as the driver says."""
    if isinstance(exc, StorageFull):
        return "disk_full"
    original = getattr(exc, "orig", None) or exc
    sqlstate = getattr(original, "sqlstate", None) or ""
    text_ = str(original).lower()
    if sqlstate == "53100" or "disk is full" in text_ or "no space left" in text_:
        return "disk_full"
    if sqlstate == "25006" or "readonly database" in text_ or "read-only" in text_:
        return "read_only"
    return "unreachable"


async def _in_thread(function: Callable[..., T], args: tuple[object, ...], deadline: float) -> T:
    # The loop's executor (app.py sizes it to the pool), awaited with one timer: the loop
    # spends half of what anyio's to_thread with fail_after cost it, on every call.
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(None, functools.partial(function, *args))
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        # Stop waiting: a call already running goes on in its thread, abandoned; one not
        # yet started never starts.
        future.cancel()

    timer = loop.call_later(deadline, expire)
    try:
        return await future
    except asyncio.CancelledError:
        if expired:
            raise DeadlineExceeded(f"no answer within {deadline} s") from None
        raise
    finally:
        timer.cancel()


def normalize_database_url(url: str) -> str:
    """Platforms hand out `postgres://` or `postgresql://`; SQLAlchemy must be told psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


@dataclass(frozen=True, slots=True)
class Deadlines:
    """Server-side limits set on every PostgreSQL connection, in milliseconds."""

    statement_timeout: int = 5000
    lock_timeout: int = 3000
    idle_in_transaction_timeout: int = 10000
    # Unacknowledged data or unanswered keepalives for this long: the connection is dead.
    tcp_user_timeout: int = 5000


def postgres_connect_args(connect_timeout: int, deadlines: Deadlines) -> dict[str, Any]:
    options = " ".join(
        [
            f"-c statement_timeout={deadlines.statement_timeout}",
            f"-c lock_timeout={deadlines.lock_timeout}",
            f"-c idle_in_transaction_session_timeout={deadlines.idle_in_transaction_timeout}",
        ]
    )
    return {
        "connect_timeout": connect_timeout,
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 2,
        "tcp_user_timeout": deadlines.tcp_user_timeout,
        "options": options,
    }


def create_db_engine(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int = 30,
    connect_timeout: int = 2,
    deadlines: Deadlines | None = None,
) -> Engine:
    url = normalize_database_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 5},
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=connect_timeout,
            hide_parameters=True,
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        pool_timeout=connect_timeout,
        # Never echo bound values (password hashes, e-mails) into errors or logs.
        hide_parameters=True,
        connect_args=postgres_connect_args(connect_timeout, deadlines or Deadlines()),
    )


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below open transactions, not the driver.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "journal_mode=WAL",
            "busy_timeout=5000",  # milliseconds
            "foreign_keys=ON",
            "synchronous=NORMAL",
            # 512 KiB of page cache per connection (SQLite's default is 2 MiB): a worker
            # pools up to 40 connections, and the soak showed their caches were most of
            # its growth under load. The OS caches the file anyway.
            "cache_size=-512",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection: Connection) -> None:
        # A writer takes its lock up front so busy_timeout applies, instead of
        # failing with "database is locked" when it upgrades a read lock.
        if connection.get_execution_options().get("sqlite_immediate", False):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        # Readers stay in autocommit: each SELECT sees one consistent snapshot, and
        # the BEGIN/ROLLBACK pair would cost as much as the query itself.


class FastRead:
    """One hot, fixed read that skips SQLAlchemy's execution machinery.

    The statement is written once in `:name` style and handed to the driver's own
    cursor; values of `binds` go through their column type's bind processor, so a
    datetime is stored and compared exactly as the ORM writes it. On the path of
    every signed-in request this is a fifth of the cost of a Core `execute`.
    """

    def __init__(self, engine: Engine, sql: str, binds: dict[str, TypeEngine[Any]]) -> None:
        self.engine = engine
        dialect = engine.dialect
        # sqlite3 takes :name; psycopg wants %(name)s.
        self.sql = re.sub(r":(\w+)", r"%(\1)s", sql) if dialect.paramstyle == "pyformat" else sql
        self.processors = {
            name: processor
            for name, type_ in binds.items()
            if (processor := type_.bind_processor(dialect)) is not None
        }

    def first(self, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """The first row, or None; driver errors come out as SQLAlchemy's, as elsewhere."""
        for name, processor in self.processors.items():
            params[name] = processor(params[name])
        dbapi_error = self.engine.dialect.loaded_dbapi.Error
        try:
            connection = self.engine.raw_connection()
        except dbapi_error as exc:
            raise self._wrapped(exc, params) from exc
        try:
            cursor = connection.cursor()
            cursor.execute(self.sql, params)
            row = cursor.fetchone()
            cursor.close()
        except dbapi_error as exc:
            # The connection may be dead (database restarted): never reuse it.
            connection.invalidate(exc)
            raise self._wrapped(exc, params) from exc
        finally:
            connection.close()  # back to the pool, rolled back
        return tuple(row) if row is not None else None

    def _wrapped(self, exc: Exception, params: dict[str, Any]) -> StatementError:
        return DBAPIError.instance(
            self.sql,
            params,
            exc,
            self.engine.dialect.loaded_dbapi.Error,
            hide_parameters=True,
            dialect=self.engine.dialect,
        )


class Database:
    """Owns the engine; runs reads and writes off the event loop, each with a deadline."""

    def __init__(
        self, engine: Engine, *, read_deadline: float = 1.5, write_deadline: float = 6.0
    ) -> None:
        self.engine = engine
        self._write_engine = engine.execution_options(sqlite_immediate=True)
        # Seconds. A silent database (no refusal, no reset) would otherwise hold a request
        # until TCP gives up.
        self.read_deadline = read_deadline
        self.write_deadline = write_deadline

    async def read(self, function: Callable[..., T], *args: object) -> T:
        """Run a read-only database call in a worker thread, for at most read_deadline."""
        return await _in_thread(function, args, self.read_deadline)

    async def write(self, function: Callable[..., T], *args: object) -> T:
        """Run a writing call in a worker thread, for at most write_deadline: past it the
        caller gets DeadlineExceeded (503) and the transaction's outcome is unknown."""
        return await _in_thread(function, args, self.write_deadline)

    @contextmanager
    def reading(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """A transaction that commits when the block ends, or rolls back on any error."""
        with Session(self._write_engine, expire_on_commit=False) as session, session.begin():
            yield session

    def fast_read(self, sql: str, binds: dict[str, TypeEngine[Any]]) -> FastRead:
        return FastRead(self.engine, sql, binds)

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def probe_write(self) -> None:
        """A real write that leaves nothing behind: a row in and out of health_probe, one
        committed transaction. Raises what a read-only or full database raises."""
        database = self.engine.url.database
        if self.engine.dialect.name == "sqlite" and database and database != ":memory:":
            folder = Path(database.removeprefix("file:").split("?")[0]).resolve().parent
            stats = os.statvfs(folder)
            if stats.f_bavail * stats.f_frsize < MIN_FREE_BYTES:
                raise StorageFull(f"less than {MIN_FREE_BYTES} bytes free")
        row = {"id": secrets.randbelow(2**31)}  # probes running at once never collide
        with self.writing() as session:
            session.execute(text("INSERT INTO health_probe (id) VALUES (:id)"), row)
            session.execute(text("DELETE FROM health_probe WHERE id = :id"), row)

    def dispose(self) -> None:
        self.engine.dispose()
