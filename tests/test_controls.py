"""The operator's controls over real HTTP with a real worker process: pausing a queue (kept across
a worker restart and a Redis restart that lost everything), cancelling a queued and a delayed job,
resetting and tripping a breaker; each admin-only and audited."""
from __future__ import annotations

import html
import re
import sqlite3
import uuid

import pytest
import redis
import requests
from dramatiq import Message

from core.broker import REDIS_NAMESPACE, FleetRedisBroker
from core.net import free_port
from tests.helpers import create_accounts, fleet, migrated, wait_for
from tests.panel import PASSWORD, start_web
from tests.servers import RedisServer

ADMIN, VIEWER = "admin@example.com", "viewer@example.com"


class Fleet:
    """A database, a redis-server, a `fleet web` and a worker process (`dramatiq tests.worker_actors`)."""

    def __init__(self, env, processes, redis_server, db_path, base):
        self.env, self.processes, self.redis, self.db_path, self.base = env, processes, redis_server, db_path, base
        self.worker = None
        self.workers_started = 0

    # -- processes ---------------------------------------------------------------------------
    def start_worker(self):
        self.worker = self.processes.worker("-p", "1", "-t", "2", env=self.env)
        self.workers_started += 1
        self.pinged()

    def pinged(self) -> None:
        """A ping (queue `fleet`) sent now is run by the worker."""
        nonce = self.ping()
        wait_for(lambda: self.joblog_status(nonce) == "success", timeout=30, message="a ping on queue fleet")

    def stop_worker(self):
        self.processes.stop(self.worker)

    def worker_log(self) -> str:
        return (self.processes.logs / f"worker-{len(self.processes.started) - 1}.log").read_text()

    # -- messages ----------------------------------------------------------------------------
    def send(self, actor: str, *args, queue: str = "tests", delay: int | None = None) -> str:
        broker = FleetRedisBroker(url=self.redis.url, namespace=REDIS_NAMESPACE, middleware=[])
        try:
            message = broker.enqueue(Message(queue_name=queue, actor_name=actor, args=args, kwargs={}, options={}),
                                     delay=delay)
        finally:
            broker.client.close()
        return message.message_id

    def ping(self) -> str:
        return self.send("ping", uuid.uuid4().hex, queue="fleet")

    def ran(self, key: str) -> list[str]:
        return [v.decode() for v in self.client().lrange(f"test:{key}", 0, -1)]

    def counted(self, key: str) -> int:
        return int(self.client().get(f"test:{key}") or 0)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis.url)

    def waiting(self, queue: str = "tests") -> int:
        return self.client().llen(f"{REDIS_NAMESPACE}:{queue}")

    # -- the database ------------------------------------------------------------------------
    def query(self, sql: str, *args):
        with sqlite3.connect(self.db_path) as conn:
            return conn.execute(sql, args).fetchall()

    def joblog_status(self, message_id: str) -> str | None:
        rows = self.query("SELECT status FROM job_log WHERE message_id = ? ORDER BY id DESC", message_id)
        return rows[0][0] if rows else None

    def audit(self) -> list[tuple]:
        """The controls' rows (not the set-up's migration and accounts)."""
        return self.query("SELECT action, who, role, target, source FROM audit_log "
                          "WHERE action NOT LIKE 'db.%' AND action NOT LIKE 'accounts.%' ORDER BY id")

    # -- the panel ---------------------------------------------------------------------------
    def session(self, email: str) -> requests.Session:
        session = requests.Session()
        session.post(f"{self.base}/admin/login", data={"email": email, "password": PASSWORD,
                                                       "csrf_token": self.token(session, "/admin/login")}, timeout=10)
        assert session.get(f"{self.base}/admin/", allow_redirects=False, timeout=10).status_code == 200
        return session

    def token(self, session: requests.Session, path: str = "/admin/") -> str:
        page = session.get(f"{self.base}{path}", timeout=10).text
        return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)

    def post(self, session: requests.Session, path: str, **data) -> requests.Response:
        data["csrf_token"] = self.token(session)
        return session.post(f"{self.base}/admin/controls/{path}", data=data, timeout=30)

    @staticmethod
    def flashes(response: requests.Response) -> str:
        return " ".join(html.unescape(re.sub(r"<[^>]+>", "", m)).replace("×", "").strip() for m in
                        re.findall(r'<div class="alert alert-[a-z]+ alert-dismissable">(.*?)</div>', response.text, re.S))


@pytest.fixture
def fleet_(fleet_env, processes, tmp_path):
    with RedisServer(tmp_path / "redis") as redis_server:  # no persistence: a restart loses everything
        env = dict(fleet_env, BROKER_URL=redis_server.url)
        create_accounts(migrated(env["DATABASE_URL"]), {ADMIN: "admin", VIEWER: "viewer"}, PASSWORD)
        port = free_port()
        start_web(processes, env, port)
        yield Fleet(env, processes, redis_server, tmp_path / "fleet.db", f"http://127.0.0.1:{port}")


def _paused_in_worker(fleet_: Fleet, times: int) -> None:
    wait_for(lambda: fleet_.worker_log().count("queue paused") >= times, timeout=20, message="the worker pauses the queue")


def _stays_queued(fleet_: Fleet, key: str) -> None:
    """A job on another queue sent after it ran, and the paused queue's job is still waiting."""
    fleet_.pinged()
    assert fleet_.counted(key) == 0
    assert fleet_.waiting() >= 1


def test_a_paused_queue_is_not_fetched_across_restarts_and_runs_after_resume(fleet_):
    admin, viewer = fleet_.session(ADMIN), fleet_.session(VIEWER)
    fleet_.start_worker()
    page = fleet_.post(admin, "queues/tests/pause", next="/admin/")
    assert "Paused queue tests" in fleet_.flashes(page)
    assert re.search(r'<tr class="fleet-paused"><td>tests</td>', page.text)  # the dashboard shows it
    _paused_in_worker(fleet_, 1)
    fleet_.send("count", "k")
    _stays_queued(fleet_, "k")

    # A worker that starts pauses the queue before its first fetch.
    fleet_.stop_worker()
    fleet_.start_worker()
    _paused_in_worker(fleet_, 1)
    _stays_queued(fleet_, "k")

    # A Redis restart loses the queue and the copy of the paused set: the database still has it.
    fleet_.stop_worker()
    fleet_.redis.stop()
    fleet_.redis.start()
    fleet_.start_worker()
    _paused_in_worker(fleet_, 1)
    fleet_.send("count", "k2")
    _stays_queued(fleet_, "k2")
    listed = fleet("queues", "list", env=fleet_.env)
    assert re.search(r"tests .* by admin@example\.com", listed.stdout), listed.stdout

    assert fleet_.post(viewer, "queues/tests/resume").status_code == 403
    assert fleet_.post(viewer, "queues/fleet/pause").status_code == 403
    assert "Resumed queue tests" in fleet_.flashes(fleet_.post(admin, "queues/tests/resume"))
    wait_for(lambda: fleet_.counted("k2") == 1, timeout=20, message="the queued job runs after the resume")
    assert "no queue 'nosuch'" in fleet_.flashes(fleet_.post(admin, "queues/nosuch/pause"))
    assert fleet_.audit() == [("queues.pause", ADMIN, "admin", "tests", "panel"),
                              ("queues.resume", ADMIN, "admin", "tests", "panel")]


def test_cancel_a_queued_and_a_delayed_job_and_reset_or_trip_a_breaker(fleet_):
    admin, viewer = fleet_.session(ADMIN), fleet_.session(VIEWER)
    fleet_.start_worker()

    # A delayed job, held by the worker until its time: dropped when it falls due.
    delayed = fleet_.send("count", "delayed", delay=2_000)
    assert fleet_.post(viewer, "jobs/cancel", message_id=delayed).status_code == 403
    done = fleet_.flashes(fleet_.post(admin, "jobs/cancel", message_id=delayed))
    assert f"Cancelled count job {delayed}" in done
    fleet_.send("count", "later", delay=2_500)
    wait_for(lambda: fleet_.counted("later") == 1, timeout=20, message="a job delayed longer runs")
    assert fleet_.counted("delayed") == 0
    assert fleet_.query("SELECT status, message FROM job_log WHERE message_id = ?", delayed) == [
        ("cancelled", f"cancelled by {ADMIN} (a worker held it for its time and drops it then)")]

    # A job waiting in a paused queue: taken out of Redis, it never runs.
    fleet_.post(admin, "queues/tests/pause")
    _paused_in_worker(fleet_, 1)
    queued = fleet_.send("count", "queued")
    assert f"Cancelled count job {queued}." in fleet_.flashes(fleet_.post(admin, "jobs/cancel", message_id=queued))
    assert fleet_.waiting() == 0
    fleet_.post(admin, "queues/tests/resume")
    fleet_.send("count", "after")
    wait_for(lambda: fleet_.counted("after") == 1, timeout=20, message="the queue runs again")
    assert fleet_.counted("queued") == 0
    assert fleet_.joblog_status(queued) == "cancelled"

    # A running job is not cancelled.
    running = fleet_.send("slow", "running", 3)
    wait_for(lambda: fleet_.ran("running"), timeout=20, message="the slow job starts")
    refused = fleet_.flashes(fleet_.post(admin, "jobs/cancel", message_id=running))
    assert "running job cannot be cancelled" in refused
    wait_for(lambda: fleet_.joblog_status(running) == "success", timeout=20, message="the slow job ends")
    gone = fleet("jobs", "cancel", running, env=fleet_.env)
    assert gone.returncode == 1 and "no queued or delayed job with message id" in gone.stderr

    # Trip: a job that needs OpenAI waits (deferred); reset: the next one runs at once.
    assert fleet_.post(viewer, "breakers/openai/trip").status_code == 403
    assert "Breaker openai: closed → open." in fleet_.flashes(fleet_.post(admin, "breakers/openai/trip"))
    waits = fleet_.send("needs_openai", "waits")
    wait_for(lambda: fleet_.joblog_status(waits) == "deferred", timeout=20, message="the job deferred")
    assert fleet_.ran("waits") == []
    assert fleet_.post(viewer, "breakers/openai/reset").status_code == 403
    assert "Breaker openai: open → closed." in fleet_.flashes(fleet_.post(admin, "breakers/openai/reset"))
    fleet_.send("needs_openai", "runs")
    wait_for(lambda: fleet_.ran("runs") == ["ran"], timeout=20, message="the job runs after the reset")

    assert [a for a in fleet_.audit() if a[0] != "queues.pause" and a[0] != "queues.resume"] == [
        ("jobs.cancel", ADMIN, "admin", delayed, "panel"),
        ("jobs.cancel", ADMIN, "admin", queued, "panel"),
        ("breakers.trip", ADMIN, "admin", "openai", "panel"),
        ("breakers.reset", ADMIN, "admin", "openai", "panel")]
