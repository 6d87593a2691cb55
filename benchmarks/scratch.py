"""A scratch PostgreSQL database for a benchmark: created on the server of
FLEET_BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/postgres), dropped after."""
from __future__ import annotations

import contextlib
import os
import uuid
from typing import Iterator

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextlib.contextmanager
def postgres_database(prefix: str = "fleet_bench") -> Iterator[str]:
    """The URL of a new, empty database, dropped when the block ends (its connections too)."""
    import psycopg2

    admin_url = os.environ.get("FLEET_BENCH_POSTGRES_URL", DEFAULT_URL)
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(admin_url)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin_url.rpartition('/')[0]}/{name}"
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
