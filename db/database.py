"""Binds the models to the database named by DATABASE_URL."""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from peewee import Database, DatabaseProxy, SqliteDatabase
from playhouse.db_url import connect as connect_url

database = DatabaseProxy()

SQLITE_PRAGMAS = {
    "journal_mode": "wal",
    "busy_timeout": 10_000,
    "synchronous": "normal",
    "foreign_keys": 1,
    "cache_size": -64_000,
}


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


def open_database(url: str) -> Database:
    """SQLite with WAL and a busy timeout, or a pooled PostgreSQL connection."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        path = url[len("sqlite:///"):] or ":memory:"
        if path != ":memory:":
            _private_file(Path(path))
        return SqliteDatabase(path, pragmas=SQLITE_PRAGMAS, timeout=10)
    if parsed.scheme in ("postgres", "postgresql"):
        pooled = "postgres+pool" + url[len(parsed.scheme):]
        return connect_url(pooled, max_connections=32, stale_timeout=300, timeout=10)
    raise ValueError(f"unsupported database scheme {parsed.scheme!r}")


def bind_database(url: str) -> Database:
    db = open_database(url)
    database.initialize(db)
    return db
