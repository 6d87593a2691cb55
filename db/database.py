"""Binds the models to the database named by DATABASE_URL, through a connection pool.

A thread takes a connection from the pool for a unit of work (a message, a web request)
and gives it back afterwards. peewee's pool checks a connection when it hands it out
(PostgreSQL: a round trip when idle; SQLite: a cheap call) and when it takes it back (a
PostgreSQL connection whose server end is gone is closed, never pooled again), so a
terminated backend or a database restart costs the work that was running, not the process.

A connection idle in the pool longer than FLEET_DB_IDLE_TIMEOUT is closed (`close_idle`, from a
ticker of each long-running process): peewee closes one by age only, and only when it is handed
out or given back, so after a burst every thread's connection stayed open until the process
stopped. A server out of connection slots ("too many clients already", the slots reserved for
superusers, a role's or a database's CONNECTION LIMIT) is the pool being full: the thread waits
for a connection to come back, up to POOL_WAIT, as it waits for one of its own pool's.
"""
from __future__ import annotations

import heapq
import logging
import os
import re
import time
from pathlib import Path
from urllib.parse import urlparse

from peewee import Database, DatabaseProxy, SqliteDatabase
from playhouse.db_url import parse as parse_url
from playhouse.pool import MaxConnectionsExceeded, PooledDatabase, PooledPostgresqlDatabase, PooledSqliteDatabase

log = logging.getLogger("fleet.database")

database = DatabaseProxy()

# Connections a process may hold at once, unless it sizes its pool from its thread count
# (`size_pool`, with the bounds of db.budget).
DEFAULT_POOL = 8
POOL_WAIT = 10  # seconds a thread waits for a free connection (in its pool or on the server)
STALE_AFTER = 300  # seconds after which a pooled connection (by age) is closed rather than reused
IDLE_CHECKS = 4  # looks for idle connections per FLEET_DB_IDLE_TIMEOUT

# What PostgreSQL answers when it has no connection slot for us, and what the pool raises when
# it has none: both are "wait for a slot", never a fault of the job.
NO_CONNECTION_SLOT = re.compile(
    r"too many clients already|remaining connection slots are reserved|too many connections for"
    r"|no free connection slot|exceeded maximum connections|max connections exceeded", re.I)

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


class _ClosesIdle:
    """A peewee pool that knows since when each pooled connection is idle, and closes those
    idle longer than a given time (`close_idle`). It works on the pool's own heap of idle
    connections (`(created, counter, connection)`), under the pool's lock: peewee 4.0.2 on."""

    def __init__(self, *args, **kwargs):
        self._idle_since: dict[int, float] = {}  # conn_key -> monotonic time it came back
        super().__init__(*args, **kwargs)

    def _close(self, conn, close_conn=False):
        with self._pool_lock:
            super()._close(conn, close_conn)
            if not close_conn:
                self._idle_since[self.conn_key(conn)] = time.monotonic()

    def close_idle_longer_than(self, seconds: float) -> int:
        """Close the pooled connections idle for more than `seconds`; how many were closed."""
        cutoff = time.monotonic() - seconds
        with self._pool_lock:
            idle = [e for e in self._connections if self._idle_since.get(self.conn_key(e[2]), 0.0) <= cutoff]
            kept = [e for e in self._connections if e not in idle]
            heapq.heapify(kept)
            self._connections = kept
            pooled = {self.conn_key(conn) for _, _, conn in kept}  # the times of those still pooled
            self._idle_since = {key: since for key, since in self._idle_since.items() if key in pooled}
        for _, _, conn in idle:
            self._close_raw(conn)
        return len(idle)


class _Postgres(_ClosesIdle, PooledPostgresqlDatabase):
    """A pooled PostgreSQL database to which a server out of connection slots is a full pool."""

    _refusal = ""  # the server's last "no slot" answer, for the error after POOL_WAIT

    def connect(self, reuse_if_open=False):
        try:
            return super().connect(reuse_if_open)
        except MaxConnectionsExceeded:
            refusal, self._refusal = self._refusal, ""
            raise MaxConnectionsExceeded(f"no free connection slot within {POOL_WAIT} s"
                                         + (f" (the server: {refusal})" if refusal else "")) from None

    def _connect(self):
        try:
            return super()._connect()
        except MaxConnectionsExceeded:
            raise
        except Exception as exc:
            text = " ".join(str(exc).split())
            if not NO_CONNECTION_SLOT.search(text):
                raise
            self._refusal = text
            raise MaxConnectionsExceeded(text) from exc  # peewee's connect() waits for a slot, then tries again


class _SqliteFile(_ClosesIdle, PooledSqliteDatabase):
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


# libpq's limits on a connection whose server went away (a host cut off, a partition): without
# them a query sent into a dead link waits on TCP's retransmission backoff, which after a minute
# retries only every half minute or so, long after the link is back. A URL's own values win.
TCP_LIMITS = {"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 3,
              "keepalives_count": 3, "tcp_user_timeout": 10_000}


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
        return _Postgres(**{**TCP_LIMITS, **parse_url(url)}, max_connections=max_connections,
                         stale_timeout=STALE_AFTER, timeout=POOL_WAIT)
    raise ValueError(f"unsupported database scheme {parsed.scheme!r}")


def bind_database(url: str) -> Database:
    db = open_database(url)
    database.initialize(db)
    return db


def size_pool(connections: int) -> None:
    """Let this process hold at most `connections` pooled connections (its threads that use the
    database, plus its background writers: db.budget has the numbers)."""
    db = database.obj
    if isinstance(db, PooledDatabase):
        db._max_connections = connections  # peewee reads it on every checkout


def close_idle(seconds: float) -> int:
    """Close this process's pooled connections idle for more than `seconds` (a ticker calls it
    every `seconds / IDLE_CHECKS`); how many were closed."""
    db = database.obj
    return db.close_idle_longer_than(seconds) if isinstance(db, _ClosesIdle) else 0


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
