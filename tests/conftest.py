"""Real parts for every test: a private redis-server, a temporary database, real workers,
the simulators, the panel and its logged-in operators, and a launcher for `fleet` processes.

Each pytest process has a session of its own (each xdist worker too): its redis-server,
SQLite file, var/ and simulator ports are its alone, so tests in parallel never share state.
The environment is set before any Fleet module that reads it is imported, so the actors bind
to the test broker exactly as they would in `fleet worker`.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from jinja2 import BytecodeCache

from core.net import free_port
from tests.helpers import InProcessWorker, Processes
from tests.servers import RedisServer, scratch_postgres

TEST_OPENAI_KEY = "sk-fleet-test-4f1c9a7e2b"
TEST_SERIES_KEY = "series-test-key-81c2"
POSTGRES_URL = os.environ.get("FLEET_TEST_POSTGRES_URL")
RABBITMQ_URL = os.environ.get("FLEET_TEST_RABBITMQ_URL")

# What the tests would otherwise sit out in real time, made short (production defaults in
# core/settings.py): breakers open after 3 failures and half-open after 2 s, a SIGKILLed
# scheduler leader is replaced within 4 s, a worker SIGKILLed mid-run blocks its entry 9 s
# (renewed every 3 s: a loaded machine may delay a renewal by seconds), a job waits 2 s for the
# database or Redis (a paused worker looks every 0.4 s), and every fetch looks for a dead worker's messages (its heartbeat timeout is set per test).
SHORT_WAITS = {
    "FLEET_CIRCUIT_FAILURES": "3",
    "FLEET_CIRCUIT_RESET": "2",
    "FLEET_SCHEDULER_LEASE": "4",
    "FLEET_OVERLAP_LOCK_TTL": "9",
    "FLEET_DEAD_WORKER_CHECKS": "1",
    "FLEET_OUTAGE_WAIT": "2",
}

_session_dir = Path(tempfile.mkdtemp(prefix="fleet-tests-"))
_redis = RedisServer(_session_dir / "redis").start()
REDIS_URL = _redis.url
# The session's simulators (started on first use) are where Fleet's settings point.
_openai_port = free_port()
_series_port = free_port()

for key in [k for k in os.environ if k.startswith("FLEET_") and not k.startswith("FLEET_TEST_")]:
    del os.environ[key]
os.environ.pop("SERIES_API_RATE", None)
os.environ.update(
    FLEET_VAR_DIR=str(_session_dir / "var"),
    DATABASE_URL=f"sqlite:///{_session_dir}/fleet.db",
    BROKER_URL=REDIS_URL,
    FLEET_SECRET_KEY="test-secret-key",
    FLEET_INSECURE_FAST_PASSWORD_HASH="1",  # panel passwords: one PBKDF2 round (tests only)
    OPENAI_API_KEY=TEST_OPENAI_KEY,
    OPENAI_BASE_URL=f"http://127.0.0.1:{_openai_port}/v1",
    SERIES_API_URL=f"http://127.0.0.1:{_series_port}",
    SERIES_API_KEY=TEST_SERIES_KEY,
    **SHORT_WAITS,
)


# Modules whose tests sit longest on real time (process kills, takeovers, outages): they are
# handed out first, so that the parallel run does not end waiting on one of them alone. Then
# the modules whose tests start a `fleet web`, a browser or many `fleet` commands: the run ends
# on tests in the pytest process, each a fraction of a second (xdist gives a worker the next test
# when it has fewer than two).
LONG_FIRST = ("test_hosts", "test_schedule_daemon", "test_ai_limits", "test_alerts", "test_soak", "test_up", "test_disk_full",
              "test_web_attack", "test_connections", "test_workouts", "test_resilience", "test_translations_workers",
              "test_redis_outages", "test_series_budget", "test_database_outages", "test_batches_cli", "test_fencing",
              "test_outbox",
              "test_controls",
              "test_web_hardened", "test_browser", "test_browser_csp", "test_browser_layout", "test_browser_accounts",
              "test_translations_browser", "test_schedule", "test_series", "test_settings", "test_cli_input",
              "test_accounts", "test_cli_place", "test_job_search", "test_alerts_rules", "test_accounts_panel")


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        module = item.module.__name__.rpartition(".")[2]
        return LONG_FIRST.index(module) if module in LONG_FIRST else len(LONG_FIRST)

    items.sort(key=rank)  # stable: within a module, and for the rest, the order of the files


def pytest_sessionfinish(session, exitstatus):
    _redis.stop()
    shutil.rmtree(_session_dir, ignore_errors=True)


# -- settings, database, broker, workers ------------------------------------------------------

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


@pytest.fixture(autouse=True)
def _no_middleware_twice(caplog):
    """Dramatiq's warning of a middleware added twice fails the test (an in-process worker removes
    its own middleware from the broker when it stops: see InProcessWorker)."""
    yield
    twice = [r.getMessage() for r in caplog.get_records("call") if "middleware of the same type twice" in r.getMessage()]
    assert not twice, twice


@pytest.fixture
def worker(broker):
    """A Dramatiq worker in this process, on the global broker."""
    worker = InProcessWorker(broker, worker_threads=4)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def processes(tmp_path):
    """Starts `fleet …` and `dramatiq …` processes for this test (logs in its tmp_path) and
    stops whatever still runs when it ends."""
    launched = Processes(tmp_path)
    yield launched
    launched.stop_all()


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


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of this test alone, with AOF on, for tests that kill and restart it."""
    with RedisServer(tmp_path / "redis", persistent=True) as server:
        yield server


# -- PostgreSQL and RabbitMQ -------------------------------------------------------------------

@pytest.fixture(scope="session")
def postgres_url():
    """A fresh PostgreSQL database for this session, dropped at the end."""
    if not POSTGRES_URL:
        pytest.skip("FLEET_TEST_POSTGRES_URL is not set")
    with scratch_postgres(POSTGRES_URL, "fleet_test") as url:
        yield url


@pytest.fixture
def own_postgres_url(postgres_url):
    """A PostgreSQL database of this test alone, migrated; its backends may be terminated
    (`tests.helpers.terminate_backends`) without touching any other database."""
    from db.database import open_database
    from db.migrate import migrate

    with scratch_postgres(POSTGRES_URL, "fleet_own") as url:
        db = open_database(url)
        migrate(db)
        db.close_all()
        yield url


@pytest.fixture(scope="session")
def rabbitmq_url():
    if not RABBITMQ_URL:
        pytest.skip("FLEET_TEST_RABBITMQ_URL is not set")
    return RABBITMQ_URL


# -- the simulators -----------------------------------------------------------------------------

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
    from core.state import state_redis

    client = state_redis()
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


# -- the browser ----------------------------------------------------------------------------------

@pytest.fixture
def chromium():
    """Debian's chromium through Playwright, launched for each test (one browser shared by the
    whole run saved about 8 CPU-seconds, but a page of a later test then sometimes never ran its
    5-second refresh); a test opens browser contexts of its own (cookies, storage, scripts:
    tests/test_browser.py's `new_context`)."""
    from playwright.sync_api import sync_playwright

    from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


# -- the panel ------------------------------------------------------------------------------------

class _SessionTemplates(BytecodeCache):
    """Jinja's compiled templates kept in memory for every app of the session: each test's app
    would otherwise compile again every template it renders (half a panel test's CPU time). A
    template's code is used only while its source is the same (Jinja compares the checksum)."""

    def __init__(self):
        self.code: dict[str, bytes] = {}

    def load_bytecode(self, bucket) -> None:
        if bucket.key in self.code:
            bucket.bytecode_from_string(self.code[bucket.key])

    def dump_bytecode(self, bucket) -> None:
        self.code[bucket.key] = bucket.bytecode_to_string()


_session_templates = _SessionTemplates()


@pytest.fixture
def app(db, broker, settings):
    """The panel's Flask app on the session's database and Redis (tests/panel.py drives it)."""
    import actors.workouts_retry  # noqa: F401  (declares the panel's background actor before a worker starts)
    from admin.app import create_app

    app = create_app(settings)
    app.config["TESTING"] = True
    app.jinja_env.bytecode_cache = _session_templates
    return app


@pytest.fixture
def admin_client(app):
    """A test client logged in as an admin."""
    from tests.panel import operator

    return operator(app, "admin")


@pytest.fixture
def viewer_client(app):
    """A test client logged in as a viewer."""
    from tests.panel import operator

    return operator(app, "viewer")
