"""Binds the models to the database named by DATABASE_URL, through a connection pool.

A thread takes a connection from the pool for a unit of work (a message, a web request)
and gives it back afterwards. peewee's pool checks a connection when it hands it out
(PostgreSQL: a round trip when idle; SQLite: a cheap call) and when it takes it back (a
PostgreSQL connection whose server end is gone is closed, never pooled again), so a
terminated backend or a database restart costs the work that was running, not the process.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import urlparse

from peewee import Database, DatabaseProxy, SqliteDatabase
from playhouse.db_url import connect as connect_url
from playhouse.pool import PooledDatabase, PooledSqliteDatabase

log = logging.getLogger("fleet.database")

database = DatabaseProxy()

# Connections a process may hold at once, unless it sizes its pool from its thread count
# (`size_pool`: a worker process takes its threads + 2, `fleet web` its threads + 2).
DEFAULT_POOL = 8
POOL_WAIT = 10  # seconds a thread waits for a free connection before the work fails (ERR_DATABASE)
STALE_AFTER = 300  # seconds after which an idle pooled connection is closed rather than reused

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "busy_timeout": 10_000,
    "synchronous": "normal",
    "foreign_keys": 1,
    "cache_size": -64_000,
}


class DatabaseMissing(Exception):
    """A SQLite database file that does not exist, where this process may not create one."""

    def __init__(self, path: Path):
        super().__init__(f"no database at {path}")
        self.path = path


_may_create = True  # the CLI allows it only to `fleet db migrate` and `fleet up`


def allow_creation(allowed: bool) -> None:
    """Whether connecting may create a missing SQLite database in this process: a command run
    in the wrong directory must not start a second, empty fleet there."""
    global _may_create
    _may_create = allowed


def require_file(url: str) -> None:
    """DatabaseMissing when `url` names a SQLite file that is not there (a process about to
    start would create an empty one at its first query); nothing to check for PostgreSQL."""
    path = url[len("sqlite:///"):] if urlparse(url).scheme == "sqlite" else ""
    if path and path != ":memory:" and not Path(path).exists():
        raise DatabaseMissing(Path(path).absolute())


class _SqliteFile(PooledSqliteDatabase):
    """A pooled SQLite database whose file is created (mode 600) on first connect, if allowed."""

    def _connect(self):
        path = Path(self.database)
        if not _may_create and not path.exists():
            raise DatabaseMissing(path.absolute())
        _private_file(path)
        return super()._connect()


def _private_file(path: Path) -> None:
    """The database holds password hashes: create it (and so its -wal and -shm, which SQLite
    creates with the database's mode) readable by its owner only, like the secret key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
    # chmod, never open: closing any descriptor of a database this process has open would drop
    # SQLite's POSIX locks on it (and so corrupt it under concurrent writers)
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if file.exists() and file.stat().st_mode & 0o077:
            file.chmod(0o600)


def open_database(url: str, max_connections: int = DEFAULT_POOL) -> Database:
    """SQLite with WAL and a busy timeout, or PostgreSQL; both pooled (an in-memory SQLite is not)."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        path = url[len("sqlite:///"):] or ":memory:"
        if path == ":memory:":
            return SqliteDatabase(path, pragmas=SQLITE_PRAGMAS, timeout=10)
        # A pooled connection moves between threads (one at a time), hence check_same_thread.
        return _SqliteFile(path, pragmas=SQLITE_PRAGMAS, max_connections=max_connections,
                                    stale_timeout=STALE_AFTER, timeout=POOL_WAIT, check_same_thread=False)
    if parsed.scheme in ("postgres", "postgresql"):
        pooled = "postgres+pool" + url[len(parsed.scheme):]
        return connect_url(pooled, max_connections=max_connections, stale_timeout=STALE_AFTER, timeout=POOL_WAIT)
    raise ValueError(f"unsupported database scheme {parsed.scheme!r}")


def bind_database(url: str) -> Database:
    db = open_database(url)
    database.initialize(db)
    return db


def size_pool(connections: int) -> None:
    """Let this process hold at most `connections` pooled connections (its threads that use the
    database, plus a spare): at 100 worker processes of 8 threads that is 1,000, not 3,200."""
    db = database.obj
    if isinstance(db, PooledDatabase):
        db._max_connections = connections  # peewee reads it on every checkout


def release_connection() -> None:
    """Give this thread's connection back to the pool (the pool closes it if it is broken)."""
    if database.obj is None or database.is_closed():
        return
    try:
        database.close()
    except Exception:  # a transaction left open: the pool rolls it back when the connection returns
        log.warning("database connection closed with a transaction open", exc_info=True)
        database.obj._state.transactions.clear()
        database.close()
