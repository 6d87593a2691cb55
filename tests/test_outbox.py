"""Nothing stranded between a commit and its job's send: Redis out of memory (`maxmemory` with
`noeviction`, a private redis-server) while plans are created with the CLI and a sweep runs.
Real CLI processes, a real scheduler and worker, the OpenAI simulator."""
from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta

import pytest
import redis
from dramatiq import Message

from actors.outbox import NotSent, resend_due, unsent_count
from actors.workouts import create_plan
from db.database import open_database
from db.migrate import migrate
from db.models import utcnow
from db.models.jobs import JobLog
from db.models.outbox import OutboxMessage
from db.models.series import Series
from db.models.workouts import User, WorkoutPlan
from tests.helpers import fleet, wait_for

PLANS, DAYS, SERIES = 3, 2, 1_500


def one_line(result) -> str:
    """The command's only line of output (on stderr), with no traceback anywhere."""
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def locks_without_their_message(client) -> list[str]:
    """Unique locks whose message is not in its queue (a claim left behind by a failed send)."""
    left = []
    for key in client.scan_iter("fleet:unique:*"):
        holder, queue, redis_id, *_ = client.get(key).decode().split()
        if not client.hexists(f"fleet:{queue}.msgs", redis_id):
            left.append(key)
    return left


def counts(url: str) -> tuple[int, int]:
    """(generated days, outbox messages still unsent)"""
    db = open_database(url)
    try:
        with WorkoutPlan.bind_ctx(db), OutboxMessage.bind_ctx(db), db.connection_context():
            return (WorkoutPlan.select().where(WorkoutPlan.status == "generated").count(),
                    OutboxMessage.select().where(OutboxMessage.sent_at.is_null()).count())
    finally:
        db.close_all()


def test_plans_and_a_sweep_under_redis_out_of_memory_get_their_jobs_once_memory_returns(
        tmp_path, private_redis, openai_sim, processes):
    """Each `create-plan` under OOM commits its plan, prints one line (what was saved, what will be
    sent), exits 1; a sweep prints one line, exits 1 and leaves no unique lock without its message;
    once memory returns, the scheduler sends every plan's job (FLEET_OUTBOX_RESEND=2 here, 30 s by
    default) and a worker generates every day, and the next sweep finds no lock in its way."""
    database_url = f"sqlite:///{tmp_path}/fleet.db"
    env = dict(os.environ, BROKER_URL=private_redis.url, DATABASE_URL=database_url,
               FLEET_VAR_DIR=str(tmp_path / "var"), FLEET_OUTBOX_RESEND="2")
    db = open_database(database_url)
    migrate(db)
    with db.bind_ctx([User, Series]), db.connection_context():
        user_id = str(User.create(email="oom@example.com").id)
        Series.insert_many([{"tvdb_id": n} for n in range(1, SERIES + 1)]).execute()
    db.close_all()

    client = redis.Redis.from_url(private_redis.url)
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", "1")  # every write refused
    create = ["workouts", "create-plan", "--user", user_id, "--days", str(DAYS), "--goal", "strength"]
    with ThreadPoolExecutor(PLANS) as pool:  # at once, as a busy app would
        created = list(pool.map(lambda _: fleet(*create, env=env), range(PLANS)))
    for result in created:
        assert result.returncode == 1
        line = one_line(result)
        assert re.fullmatch(rf"fleet: Plan #\d+ \(User #{user_id}\) with {DAYS} pending day\(s\) saved, but 1 job\(s\) "
                            r"could not be sent \(Redis: OOM command not allowed .*\); they are kept and sent within 2 s "
                            r"once it takes them", line), line
    assert counts(database_url) == (0, PLANS)
    status = fleet("jobs", "outbox", env=env)
    assert re.fullmatch(rf"Outbox: {PLANS} job\(s\) not sent yet, the oldest committed \d+ s ago \(last error: Redis: "
                        r"OOM command not allowed .*\); the scheduler sends them again every 2 s\.", status.stdout.strip())

    # Room for some of a page's unique locks but not for its messages: the claims that got through go back.
    client.config_set("maxmemory", str(client.info("memory")["used_memory"] + 60_000))
    swept = fleet("series", "import-missing-data", env=env)
    assert swept.returncode == 1, swept.stdout
    assert re.fullmatch(r"fleet: series\.import-missing-data stopped: Redis: OOM command not allowed .*; 0 data job\(s\) "
                        r"were queued before that, the rows left are found by the next run", one_line(swept))
    assert locks_without_their_message(client) == []

    client.config_set("maxmemory", "0")  # memory returns
    swept = fleet("series", "import-missing-data", env=env)
    assert swept.stdout.strip() == (f"Found {SERIES} series without data; dispatched {SERIES} data job(s), "
                                    "0 already queued."), swept.stderr
    processes.start("scheduler", env=env)
    processes.start("worker", "-p", "1", "-t", "2", "-Q", "workouts", env=env)
    wait_for(lambda: counts(database_url) == (PLANS * DAYS, 0), timeout=60,
             message="every plan's job sent from the outbox and its days generated")
    assert openai_sim.stats()["requests"] == PLANS * DAYS  # each day once: no job ran twice


# -- in this process: a send again keeps the message's id and never sends one twice ---------------

@contextmanager
def refusing(client):
    """Redis out of memory for the block (`noeviction`: every write refused)."""
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", "1")
    try:
        yield
    finally:
        client.config_set("maxmemory", "0")


def test_a_job_redis_refused_is_sent_again_under_its_own_id_and_once(db, broker):
    user = User.create(email="refused@example.com")
    with refusing(broker.client), pytest.raises(NotSent):
        create_plan(user.id, 2, "strength", generate=True)
    [row] = OutboxMessage.select()
    assert row.sent_at is None and row.attempts == 1 and "OOM" in row.last_error
    assert broker.client.hlen("fleet:workouts.msgs") == 0
    assert resend_due(older_than=0) == (1, 0)
    [data] = broker.client.hvals("fleet:workouts.msgs")
    assert Message.decode(data).message_id == row.message_id
    assert resend_due(older_than=0) == (0, 0) and unsent_count() == 0


def test_a_sent_job_whose_mark_was_lost_is_found_delivered_not_sent_again(db, broker, worker, openai_sim):
    """Queued, or already run (its JobLog rows): a send again finds it delivered either way."""
    user = User.create(email="sent@example.com")
    worker.pause()
    plan = create_plan(user.id, 2, "strength", generate=True)
    OutboxMessage.update(sent_at=None).execute()  # as if the database had blinked right after the send
    assert resend_due(older_than=0) == (0, 1)  # its unique lock is held by the queued copy
    worker.resume()
    wait_for(lambda: WorkoutPlan.select().where((WorkoutPlan.plan == plan.id) & (WorkoutPlan.status == "generated"))
             .count() == 2, message="the plan generated")
    [row] = OutboxMessage.select()
    wait_for(lambda: JobLog.select().where((JobLog.message_id == row.message_id) & (JobLog.status == "success"))
             .exists(), message="its JobLog row")
    OutboxMessage.update(sent_at=None).execute()
    assert resend_due(older_than=0) == (0, 1)  # run already: its JobLog rows say so
    assert openai_sim.stats()["requests"] == 2


def test_jobs_left_unsent_past_the_resend_show_on_health(db, broker, admin_client):
    """A job committed but not sent for longer than the scheduler should take: Health is degraded."""
    user = User.create(email="health@example.com")
    with refusing(broker.client), pytest.raises(NotSent):
        create_plan(user.id, 1, "strength", generate=True)
    assert admin_client.get("/healthz").json["checks"]["outbox"] == {"ok": True, "unsent": 1}
    OutboxMessage.update(created_at=utcnow() - timedelta(minutes=5)).execute()
    admin_client.application.extensions["fleet_cache"].clear()  # the checks are cached a few seconds
    check = admin_client.get("/healthz").json["checks"]["outbox"]
    assert check["ok"] is False and check["unsent"] == 1
    assert re.fullmatch(r"1 job\(s\) committed but not sent, the oldest for 30\d s \(is a scheduler running\?\); "
                        r"last error: Redis: OOM command not allowed .*", check["error"]), check["error"]
    assert "outbox" in admin_client.get("/healthz").json["degraded"]
