"""Connections bounded: what each process may open, idle pooled connections closed, a server
out of connection slots waited for. Real PostgreSQL, real worker processes."""
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from urllib.parse import urlparse

import psycopg2
import pytest
import requests
from peewee import OperationalError, PostgresqlDatabase
from playhouse.pool import MaxConnectionsExceeded

from core.errors import classify
from core.net import free_port
from core.settings import SettingsError, load_settings
from db import budget
from db.models.jobs import JobLog
from tests import worker_actors as wa
from tests.helpers import backends, fleet, wait_for


@contextmanager
def reading(url):
    """The test's own look at a database: unpooled, so its connection does not linger."""
    parsed = urlparse(url)
    pg = PostgresqlDatabase(parsed.path.lstrip("/"), user=parsed.username, host=parsed.hostname, port=parsed.port)
    with pg.bind_ctx([JobLog]):
        yield pg


def rows_of(pg, messages) -> list:
    with pg.connection_context():
        return list(JobLog.select().where(JobLog.message_id.in_([m.message_id for m in messages])))


def all_succeeded(pg, messages):
    rows = rows_of(pg, messages)
    return len([r for r in rows if r.status == "success"]) == len(messages) and rows


def server_slots(url) -> int:
    admin = psycopg2.connect(url)
    try:
        cursor = admin.cursor()
        cursor.execute("SELECT name, setting FROM pg_settings WHERE name IN "
                       "('max_connections', 'superuser_reserved_connections', 'reserved_connections')")
        found = {name: int(setting) for name, setting in cursor.fetchall()}
    finally:
        admin.close()
    return found["max_connections"] - found["superuser_reserved_connections"] - found.get("reserved_connections", 0)


def printed_total(output: str) -> int:
    return int(re.search(r"^\s*total\s+(\d+)", output, re.M).group(1))


def test_the_idle_timeout_is_a_bounded_setting():
    """FLEET_DB_IDLE_TIMEOUT defaults to 60 s; 0, a day or a word stops with the variable named."""
    assert load_settings({}).db_idle_timeout == 60
    assert load_settings({"FLEET_DB_IDLE_TIMEOUT": "5"}).db_idle_timeout == 5
    for value in ("0", "86400", "soon"):
        with pytest.raises(SettingsError, match="FLEET_DB_IDLE_TIMEOUT"):
            load_settings({"FLEET_DB_IDLE_TIMEOUT": value})


@pytest.mark.parametrize("error", [
    OperationalError("FATAL:  sorry, too many clients already"),
    OperationalError("FATAL:  remaining connection slots are reserved for non-replication superuser connections"),
    OperationalError('FATAL:  too many connections for role "fleet"'),
    MaxConnectionsExceeded("no free connection slot within 10 s"),
])
def test_no_free_connection_slot_is_waited_out_without_spending_a_retry(error):
    """PostgreSQL's "no slot" answers and a full pool classify as ERR_DATABASE with a deferral, as a dropped
    connection does (the database going away); a missing table (the schema) is a plain retry."""
    found = classify(error)
    assert found.code.code == "ERR_DATABASE" and found.defer_seconds is not None
    assert classify(OperationalError("server closed the connection unexpectedly")).defer_seconds is not None
    assert classify(OperationalError("no such table: workout_plans")).defer_seconds is None


# -- what each process may open ------------------------------------------------------------------

def test_a_fleet_is_the_sum_of_its_processes():
    """The bounds of each process kind add up for a described fleet, and the threads that would fit."""
    fleet_of = budget.Fleet(hosts=3, processes=2, threads=16, web=1, web_threads=8, schedulers=2, cli=2)
    assert budget.worker_process(16) == 18 and budget.web_process(8) == 10
    assert fleet_of.total == 3 * 2 * 18 + 10 + 2 + 2 == 122
    assert fleet_of.threads_that_fit(97) == 11  # 3 × 2 × 13 + 14 = 92; -t 12 would be 98
    assert fleet_of.threads_that_fit(20) == 0


def test_db_connections_says_a_fleet_too_big_for_the_server_does_not_fit_and_how_to_fix_it(postgres_url, fleet_env):
    """`fleet db connections` prints the total against the server's max_connections less the reserved
    slots: exit 1 with the fix when it is over, exit 0 and the spare when it fits."""
    env = dict(fleet_env, DATABASE_URL=postgres_url)
    slots = server_slots(postgres_url)
    hosts = slots // 18 + 1  # 2 processes of 16 threads a host: always over
    done = fleet("db", "connections", "--hosts", str(hosts), "-p", "2", "-t", "16", "--schedulers", "2", env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    total = hosts * 2 * 18 + 10 + 2 + 2
    assert printed_total(done.stdout) == total
    assert f"server: {slots} connections for Fleet" in done.stdout
    assert f"does NOT fit: {total} > {slots}" in done.stdout
    assert "PgBouncer" in done.stdout

    small = fleet("db", "connections", "-p", "2", "-t", "4", "--web", "1", "--web-threads", "4", env=env)
    assert small.returncode == 0, small.stdout + small.stderr
    assert printed_total(small.stdout) == 2 * 6 + 6 + 1 + 2
    assert f"fits: {2 * 6 + 6 + 1 + 2} ≤ {slots}" in small.stdout


def test_db_connections_on_sqlite_has_no_server_limit(fleet_env):
    """On SQLite it prints the per-process bounds and says there is no server limit."""
    done = fleet("db", "connections", "-p", "1", "-t", "2", env=fleet_env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert printed_total(done.stdout) == 4 + 10 + 1 + 2
    assert "SQLite: no server connection limit" in done.stdout


# -- a worker under a burst, then idle ---------------------------------------------------------

def test_a_worker_opens_no_more_than_its_bound_and_closes_idle_connections(own_postgres_url, broker, processes,
                                                                           fleet_env):
    """A worker of 8 threads under a burst opens no more backends than `fleet db connections` prints
    for it, and once idle for FLEET_DB_IDLE_TIMEOUT it closes them all while it keeps running."""
    env = dict(os.environ, DATABASE_URL=own_postgres_url, FLEET_DB_IDLE_TIMEOUT="2")
    bound = fleet("db", "connections", "-p", "1", "-t", "8", "--web", "0", "--schedulers", "0", "--cli", "0",
                  env=dict(fleet_env, DATABASE_URL=own_postgres_url))
    assert printed_total(bound.stdout) == budget.worker_process(8), bound.stdout + bound.stderr
    worker = processes.worker("-p", "1", "-t", "8", env=env)
    key = uuid.uuid4().hex
    messages = [wa.queries.send(key, 0.5) for _ in range(48)]
    with reading(own_postgres_url) as pg:
        most = 0
        while not all_succeeded(pg, messages):
            most = max(most, backends(own_postgres_url))
            assert worker.poll() is None
            time.sleep(0.05)
        assert 8 <= most <= printed_total(bound.stdout)  # the burst kept every thread busy, within the bound
        wait_for(lambda: backends(own_postgres_url) <= 1, timeout=30, message="the idle connections closed")
        assert worker.poll() is None  # closed by the worker, which still runs
    assert processes.stop(worker) == 0


def test_the_web_closes_its_idle_connections_too(own_postgres_url, processes, fleet_env):
    """`fleet web` serves concurrent requests within its bound and then closes its idle connections."""
    port = free_port()
    env = dict(fleet_env, DATABASE_URL=own_postgres_url, FLEET_DB_IDLE_TIMEOUT="1")
    web = processes.start("web", "--port", str(port), "--threads", "4", env=env, name="web")

    def healthz(_=None):
        assert web.poll() is None
        try:
            return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code
        except requests.ConnectionError:
            return None

    wait_for(healthz, timeout=30, message="fleet web")
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(healthz, range(64)))
    assert set(answers) == {200}
    assert 1 <= backends(own_postgres_url) <= budget.web_process(4)
    wait_for(lambda: backends(own_postgres_url) == 0, timeout=30, message="the idle connections closed")
    assert web.poll() is None


# -- a server out of connection slots ----------------------------------------------------------

@pytest.fixture
def small_role(own_postgres_url):
    """A role that may open 3 connections, with the rights to work the test database."""
    name = f"fleet_small_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(own_postgres_url)
    admin.autocommit = True
    cursor = admin.cursor()
    cursor.execute(f"CREATE ROLE {name} LOGIN CONNECTION LIMIT 3")
    cursor.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {name}")
    cursor.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {name}")
    parsed = urlparse(own_postgres_url)
    try:
        yield f"postgresql://{name}@{parsed.hostname}:{parsed.port}{parsed.path}"
    finally:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,))
        cursor.execute(f"DROP OWNED BY {name}")
        cursor.execute(f"DROP ROLE {name}")
        admin.close()


def test_a_worker_with_more_threads_than_connection_slots_waits_for_them(own_postgres_url, small_role, broker,
                                                                         processes):
    """A worker of 8 threads on a role limited to 3 connections waits for them ("too many connections
    for role"): every job succeeds at its first attempt, none retried or deferred."""
    worker = processes.worker("-p", "1", "-t", "8", env=dict(os.environ, DATABASE_URL=small_role))
    key = uuid.uuid4().hex
    messages = [wa.queries.send(key, 0.2) for _ in range(40)]
    with reading(own_postgres_url) as pg:
        rows = wait_for(lambda: all_succeeded(pg, messages), timeout=120, message="every job done")
    assert sorted((r.status, r.error_code) for r in rows) == [("success", None)] * len(messages)  # no retry, no deferral
    assert wa.state_redis().llen(f"test:{key}") == len(messages)
    assert processes.stop(worker) == 0


# -- behind PgBouncer ----------------------------------------------------------------------------

POOLED_SERVER_CONNECTIONS = 3


@pytest.fixture
def pgbouncer(own_postgres_url):
    """A PgBouncer in transaction pooling mode in front of the test database, keeping at most
    POOLED_SERVER_CONNECTIONS server connections; the URL to reach the database through it."""
    binary = shutil.which("pgbouncer") or next((p for p in ("/usr/sbin/pgbouncer",) if os.path.exists(p)), None)
    if binary is None:
        pytest.skip("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    server = urlparse(own_postgres_url)
    name = server.path.lstrip("/")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="fleet-pgbouncer-") as directory:
        os.chmod(directory, 0o755)  # read by the user pgbouncer switches to when started as root
        config = os.path.join(directory, "pgbouncer.ini")
        with open(config, "w") as file:
            file.write(f"""[databases]
{name} = host={server.hostname} port={server.port} dbname={name} user={server.username}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = {POOLED_SERVER_CONNECTIONS}
max_client_conn = 200
logfile = {directory}/pgbouncer.log
""")
        as_root = ["-u", "postgres"] if os.geteuid() == 0 else []  # pgbouncer refuses to run as root
        if as_root:
            shutil.chown(directory, "postgres")
        proc = subprocess.Popen([binary, *as_root, config], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            url = f"postgresql://{server.username}@127.0.0.1:{port}/{name}"

            def answers():
                assert proc.poll() is None, proc.stderr.read().decode()
                try:
                    psycopg2.connect(url).close()
                    return True
                except psycopg2.OperationalError:
                    return False

            wait_for(answers, timeout=10, message="pgbouncer to listen")
            yield url
        finally:
            proc.terminate()
            proc.wait(10)


def test_a_worker_through_pgbouncer_in_transaction_mode_completes_every_job(own_postgres_url, pgbouncer, broker,
                                                                           processes):
    """A worker of 8 threads through PgBouncer in transaction mode with 3 server connections: every
    job succeeds at its first attempt, and PostgreSQL sees no more than PgBouncer's 3."""
    worker = processes.worker("-p", "1", "-t", "8", env=dict(os.environ, DATABASE_URL=pgbouncer))
    key = uuid.uuid4().hex
    messages = [wa.queries.send(key, 0.2) for _ in range(40)]
    with reading(own_postgres_url) as pg:
        most = 0
        while not (rows := all_succeeded(pg, messages)):
            most = max(most, backends(own_postgres_url))
            assert worker.poll() is None
            time.sleep(0.05)
    assert most <= POOLED_SERVER_CONNECTIONS + 1  # PgBouncer's and this test's look
    assert sorted((r.status, r.error_code) for r in rows) == [("success", None)] * len(messages)
    assert processes.stop(worker) == 0
