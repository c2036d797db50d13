"""The database engine and transaction scopes.

Everything but `read_in_thread` and `write_in_thread` is synchronous: call it from a worker thread
(`run_in_threadpool`, or `read_in_thread` for reads), never on the event loop."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import anyio
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, StatementError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.types import TypeEngine
from sqlmodel import Session

# Seconds a read may take before we stop waiting: a database that went silent
# (no refusal, no reset) would otherwise hold every page until TCP gives up.
READ_DEADLINE = 1.5


class ReadTimeout(Exception):
    """The database did not answer a read within READ_DEADLINE."""


# What a lost, unreachable or locked database raises; the app answers these with 503.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    PoolTimeoutError,
    ReadTimeout,
)

T = TypeVar("T")


async def read_in_thread(function: Callable[..., T], *args: object) -> T:
    """Run a read-only database call in a worker thread, for at most READ_DEADLINE.

    Past the deadline the thread is abandoned (it ends when the driver gives up)
    and ReadTimeout is raised. Only for reads: a write left behind might still
    commit after the person was told it failed.
    """
    try:
        with anyio.fail_after(READ_DEADLINE):
            return await anyio.to_thread.run_sync(
                functools.partial(function, *args), abandon_on_cancel=True
            )
    except TimeoutError:
        raise ReadTimeout(f"no answer within {READ_DEADLINE} s") from None


async def write_in_thread(function: Callable[..., T], *args: object) -> T:
    """Run a database write in a worker thread, to its end (never abandoned)."""
    return await anyio.to_thread.run_sync(functools.partial(function, *args))


def normalize_database_url(url: str) -> str:
    """Platforms hand out `postgres://` or `postgresql://`; SQLAlchemy must be told psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def create_db_engine(
    url: str, *, pool_size: int = 10, max_overflow: int = 30, connect_timeout: int = 2
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
        connect_args={"connect_timeout": connect_timeout},
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
    """Owns the engine; hands out read and write transaction scopes."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._write_engine = engine.execution_options(sqlite_immediate=True)

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

    def dispose(self) -> None:
        self.engine.dispose()
