"""Real parts for every test: a private redis-server, a temporary database, real workers.

The environment is set before any Fleet module that reads it is imported, so the
actors bind to the test broker exactly as they would in `fleet worker`.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import redis as redis_lib

from core.net import free_port

TEST_OPENAI_KEY = "sk-fleet-test-4f1c9a7e2b"
TEST_SERIES_KEY = "series-test-key-81c2"
POSTGRES_URL = os.environ.get("FLEET_TEST_POSTGRES_URL")
RABBITMQ_URL = os.environ.get("FLEET_TEST_RABBITMQ_URL")

_session_dir = Path(tempfile.mkdtemp(prefix="fleet-tests-"))
_redis_port = free_port()


def _start_redis(port: int, workdir: Path) -> subprocess.Popen:
    from core.embedded_redis import redis_server_binary

    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir), "--loglevel", "warning"],
        stdout=subprocess.DEVNULL,
    )
    client = redis_lib.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            return proc
        except redis_lib.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("test redis-server did not start")


_redis_proc = _start_redis(_redis_port, _session_dir / "redis")
REDIS_URL = f"redis://127.0.0.1:{_redis_port}/0"
# The session's OpenAI simulator (started on first use) is where Fleet's settings point.
_openai_port = free_port()
_series_port = free_port()  # and the series API simulator's (fixture `series_api`)

for key in [k for k in os.environ if k.startswith("FLEET_") and not k.startswith("FLEET_TEST_")]:
    del os.environ[key]
os.environ.update(
    FLEET_VAR_DIR=str(_session_dir / "var"),
    DATABASE_URL=f"sqlite:///{_session_dir}/fleet.db",
    BROKER_URL=REDIS_URL,
    FLEET_SECRET_KEY="test-secret-key",
    OPENAI_API_KEY=TEST_OPENAI_KEY,
    OPENAI_BASE_URL=f"http://127.0.0.1:{_openai_port}/v1",
    # breakers open after 3 service failures and half-open after 2 s, so outages fit in a test
    FLEET_CIRCUIT_FAILURES="3",
    FLEET_CIRCUIT_RESET="2",
)
os.environ.update(SERIES_API_URL=f"http://127.0.0.1:{_series_port}", SERIES_API_KEY=TEST_SERIES_KEY)
os.environ.pop("SERIES_API_RATE", None)


def pytest_sessionfinish(session, exitstatus):
    _redis_proc.terminate()
    _redis_proc.wait(10)
    shutil.rmtree(_session_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture(scope="session")
def settings():
    from actors.middleware.metrics import multiprocess_metrics
    from actors.runtime import boot
    from core.settings import get_settings

    settings = boot(get_settings())
    # A process keeps its Prometheus counters in one directory, the first one used: make it the
    # session's, which the panel's /metrics reads (tests with a var/ of their own come later).
    multiprocess_metrics(settings.metrics_dir)
    return settings


@pytest.fixture(scope="session")
def postgres_url():
    """A fresh PostgreSQL database for this session, dropped at the end."""
    if not POSTGRES_URL:
        pytest.skip("FLEET_TEST_POSTGRES_URL is not set")
    import psycopg2

    name = f"fleet_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(POSTGRES_URL)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    base, _, _ = POSTGRES_URL.rpartition("/")
    yield f"{base}/{name}"
    admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture
def own_postgres_url(postgres_url):
    """A PostgreSQL database of this test alone, migrated; its backends may be terminated
    (`tests.helpers.terminate_backends`) without touching any other database."""
    import psycopg2

    from db.database import open_database
    from db.migrate import migrate

    name = f"fleet_own_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(POSTGRES_URL)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    url = f"{POSTGRES_URL.rpartition('/')[0]}/{name}"
    db = open_database(url)
    migrate(db)
    db.close_all()
    yield url
    admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture(scope="session")
def rabbitmq_url():
    if not RABBITMQ_URL:
        pytest.skip("FLEET_TEST_RABBITMQ_URL is not set")
    return RABBITMQ_URL


@pytest.fixture(scope="session")
def _session_openai():
    from core.simulators.openai_sim import start_openai_simulator

    server = start_openai_simulator(port=_openai_port, api_key=TEST_OPENAI_KEY)
    yield server
    server.stop()


@pytest.fixture
def openai_sim(_session_openai):
    """The OpenAI simulator Fleet's settings point at, with no faults, for this test; the fleet's
    OpenAI budget starts afresh (no limits learned, no 429 holding it back)."""
    _session_openai.reset()
    _forget_openai_budget()
    yield _session_openai
    _session_openai.reset()
    _forget_openai_budget()


def _forget_openai_budget() -> None:
    from core.openai_budget import PREFIX, forget_openai_budget

    client = redis_lib.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{PREFIX}:*"))
    if keys:
        client.delete(*keys)
    forget_openai_budget()


@pytest.fixture(scope="session")
def _session_series():
    from core.simulators.series_sim import start_series_simulator

    server = start_series_simulator(port=_series_port, api_key=TEST_SERIES_KEY)
    yield server
    server.stop()


@pytest.fixture
def series_api(_session_series):
    """The series API simulator Fleet's settings point at, with no faults and no missing ids, for this test."""
    _session_series.reset()
    yield _session_series
    _session_series.reset()


@pytest.fixture
def db(settings):
    """The session's SQLite database, migrated, emptied before each test."""
    from db.database import database
    from db.migrate import migrate

    database.connect(reuse_if_open=True)
    migrate(database.obj)
    tables = [t for t in database.get_tables() if t != "fleet_migration"]
    with database.atomic():
        for table in tables:
            database.execute_sql(f'DELETE FROM "{table}"')
    yield database
    if not database.is_closed():
        database.close()


@pytest.fixture
def broker(settings):
    """The global Fleet broker on the test Redis, flushed before each test."""
    import dramatiq

    import actors.all  # noqa: F401  (declares every actor on the broker)

    broker = dramatiq.get_broker()
    broker.client.flushdb()
    yield broker
    broker.client.flushdb()


@pytest.fixture
def worker(broker):
    from dramatiq import Worker

    worker = Worker(broker, worker_threads=4, worker_timeout=100)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def fleet_env(tmp_path, redis_url):
    """Environment for a `fleet` subprocess with its own var/ and database."""
    env = dict(os.environ)
    env.update(
        FLEET_VAR_DIR=str(tmp_path / "var"),
        DATABASE_URL=f"sqlite:///{tmp_path}/fleet.db",
        BROKER_URL=redis_url,
        PYTHONUNBUFFERED="1",
    )
    return env
