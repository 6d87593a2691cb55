"""Redis blinks: a SIGKILL and a restart on its AOF, retries that cannot be enqueued, messages
a live worker lost from memory, unique locks whose message is gone. Real redis-server, real
worker processes."""
import json
import os
import subprocess
import sys
import time
import uuid

import pytest
import redis
from dramatiq import Message

from core.state import state_redis
from db.models.jobs import JobLog
from tests import worker_actors as wa
from tests.helpers import fleet, wait_for


def send(env, actor: str, *args, **options) -> str:
    """Send from another process (bound to `env`'s broker); the message id."""
    code = ("import json, sys\nfrom tests import worker_actors as wa\n"
            "m = getattr(wa, sys.argv[1]).send_with_options(args=json.loads(sys.argv[2]), **json.loads(sys.argv[3]))\n"
            "print(m.message_id)")
    done = subprocess.run([sys.executable, "-c", code, actor, json.dumps(args), json.dumps(options)],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def notes(client, key):
    return [v.decode() for v in client.lrange(f"test:{key}", 0, -1)]


@pytest.fixture
def crash_worker(private_redis, db, processes, tmp_path):
    """A worker process on the private Redis (heartbeat timeout 3 s): its environment and a client."""
    env = dict(os.environ, BROKER_URL=private_redis.url, FLEET_HEARTBEAT_TIMEOUT="3")
    worker = processes.worker("-p", "1", "-t", "2", env=env)
    client = redis.Redis.from_url(private_redis.url)
    yield env, client
    assert processes.stop(worker) == 0
    assert "Exception in thread" not in (tmp_path / "worker-0.log").read_text()  # no consumer thread died


def test_every_consumer_recovers_after_a_redis_crash_and_delayed_messages_still_run(private_redis, crash_worker):
    """After a Redis crash every consumer recovers, and the delayed queue's retries still run."""
    env, client = crash_worker
    key = uuid.uuid4().hex
    send(env, "flaky", key, 1, retry_delays=[6])
    wait_for(lambda: client.hlen("fleet:tests.DQ.msgs") == 1 and len(notes(client, key)) == 1, timeout=30,
             message="the retry held by the delayed queue's consumer")
    private_redis.kill()
    time.sleep(1)  # down for a moment: every consumer meets the broken connection
    private_redis.start()
    wait_for(lambda: len(notes(client, key)) == 2, timeout=40, message="the retry run after the crash")
    after = uuid.uuid4().hex
    send(env, "count", after)
    wait_for(lambda: client.get(f"test:{after}") == b"1", timeout=20, message="a new message after the crash")


def test_a_retry_that_cannot_be_enqueued_is_not_acked(private_redis, crash_worker):
    """A retry whose enqueue fails while Redis is down leaves its message unacked, so it is not lost."""
    env, client = crash_worker
    key = uuid.uuid4().hex
    message_id = send(env, "fails_slowly", key, 3.0)
    wait_for(lambda: notes(client, key) == ["start"], timeout=30, message="the first attempt")
    private_redis.kill()  # the attempt fails while Redis is down: its retry cannot be enqueued
    time.sleep(5)
    private_redis.start()
    wait_for(lambda: notes(client, key) == ["start", "start", "done"], timeout=40, message="the retry")
    got = wait_for(lambda: (r := list(JobLog.select().where(JobLog.message_id == message_id).order_by(JobLog.id)))
                   and len(r) == 2 and r, message="JobLog rows")
    assert [(r.attempt, r.status) for r in got] == [(1, "retrying"), (2, "success")]


def test_messages_a_live_worker_no_longer_holds_come_back_within_the_heartbeat_timeout(broker, db, processes):
    """A message left in a live worker's ack set comes back within the heartbeat timeout, not at the worker's restart."""
    env = dict(os.environ, FLEET_HEARTBEAT_TIMEOUT="3")
    worker = processes.worker("-p", "1", "-t", "2", env=env)
    key = uuid.uuid4().hex
    try:
        ours = broker.broker_id.encode()
        wait_for(lambda: [m for m in broker.client.zrange("fleet:__heartbeats__", 0, -1) if m != ours],
                 timeout=30, message="the worker's heartbeat")
        [worker_id] = [m.decode() for m in broker.client.zrange("fleet:__heartbeats__", 0, -1) if m != ours]
        # A message the worker fetched and then lost from memory, as a consumer restart leaves it.
        lost = wa.count.message(key).copy(options={"redis_message_id": str(uuid.uuid4())})
        broker.client.hset("fleet:tests.msgs", lost.options["redis_message_id"], lost.encode())
        broker.client.sadd(f"fleet:__acks__.{worker_id}.tests", lost.options["redis_message_id"])
        wait_for(lambda: state_redis().get(f"test:{key}") == b"1", timeout=3 * 2 + 5, message="the lost message run")
        assert worker.poll() is None
        # once run, it is acked (its run noted the count first: the ack may follow a moment later)
        wait_for(lambda: not broker.client.sismember(f"fleet:__acks__.{worker_id}.tests", lost.options["redis_message_id"]),
                 timeout=10, message="the lost message acked")
    finally:
        assert processes.stop(worker) == 0


# -- unique locks whose message is gone -----------------------------------------------------

def lose(broker, message) -> None:
    """The message vanishes from Redis (as in a crash that lost it); its lock stays."""
    redis_id = message.options["redis_message_id"]
    broker.client.hdel(f"fleet:{message.queue_name}.msgs", redis_id)
    broker.client.lrem(f"fleet:{message.queue_name}", 0, redis_id)


def age(key: str, seconds: float = 60) -> None:
    """Make a lock look as old as one a crash leaves behind (the claim grace is over)."""
    holder, queue, redis_id, at, state = state_redis().get(key).decode().split()
    state_redis().set(key, f"{holder} {queue} {redis_id} {int(at) - int(seconds * 1000)} {state}", keepttl=True)


def test_a_lock_names_its_message_and_is_taken_over_once_that_message_is_gone(broker, db):
    key = uuid.uuid4().hex
    first = wa.unique_sleeper.send(key, 0)
    lock = first.options["unique_key"]
    holder, queue, redis_id, _, state = state_redis().get(lock).decode().split()
    assert (holder, queue, redis_id, state) == (first.message_id, "tests", first.options["redis_message_id"], "q")
    age(lock)
    assert wa.unique_sleeper.send(key, 0) is None  # old, but its message is still queued
    lose(broker, first)
    second = wa.unique_sleeper.send(key, 0)
    assert second is not None  # a lock whose message is gone is stale: the next send takes it over
    assert state_redis().get(lock).decode().split()[0] == second.message_id
    assert wa.unique_sleeper.send(key, 0) is None


def test_a_delayed_message_keeps_its_lock(broker, db):
    key = uuid.uuid4().hex
    first = wa.unique_sleeper.send_with_options(args=(key, 0), delay=60_000)
    lock = first.options["unique_key"]
    assert state_redis().get(lock).decode().split()[1] == "tests.DQ"
    age(lock)
    assert wa.unique_sleeper.send(key, 0) is None


def test_rescue_stale_takes_over_the_lock_of_a_lost_plan_job(broker, db):
    from datetime import timedelta

    from actors.workouts import dispatch
    from db.models import utcnow
    from db.models.workouts import Plan, User, WorkoutPlan

    user = User.create(email="lost@x.io")
    plan = Plan.create(user=user, goal="g", days=1)
    WorkoutPlan.create(plan=plan, day=1, updated_at=utcnow() - timedelta(hours=3))
    lost = dispatch(user.id, plan.id)
    lose(broker, lost)
    age(lost.options["unique_key"])
    result = fleet("workouts", "rescue-stale", "--hours", "2", env=dict(os.environ))
    assert result.stdout.strip() == ("Found 1 plan(s) with days pending for more than 2 hour(s); "
                                     "dispatched 1 generation job(s) (0 already in flight).")
    assert broker.client.hlen("fleet:workouts.msgs") == 1


def test_send_many_takes_over_stale_locks_too(broker, db):
    keys = [uuid.uuid4().hex for _ in range(3)]
    lost = wa.unique_sleeper.send(keys[0], 0)
    kept = wa.unique_sleeper.send(keys[1], 0)
    lose(broker, lost)
    age(lost.options["unique_key"])
    age(kept.options["unique_key"])
    assert wa.unique_sleeper.send_many([(k, 0) for k in keys]) == (2, 1)
    queued = [Message.decode(d) for d in broker.client.hvals("fleet:tests.msgs")]
    assert sorted(m.args[0] for m in queued) == sorted(keys)


# -- Redis refusing writes under a running worker --------------------------------------------------

def test_redis_out_of_memory_under_a_running_worker_is_waited_out(private_redis, openai_sim, processes, tmp_path):
    """Redis at `maxmemory` (`noeviction`) for 6 s while a worker generates plans: the worker pauses
    (one line) and resumes (one line); the jobs that met it wait without spending a retry (their
    deferrals, refused too, are enqueued once Redis takes writes: nothing is acked before); no day
    failed, no dead letter, every day generated."""
    from db.database import open_database
    from db.migrate import migrate
    from db.models.workouts import Plan, User, WorkoutPlan

    openai_sim.control(latency_ms=200)
    url = f"sqlite:///{tmp_path}/fleet.db"
    env = dict(os.environ, BROKER_URL=private_redis.url, DATABASE_URL=url, FLEET_VAR_DIR=str(tmp_path / "var"),
               FLEET_RETRY_DELAYS="1,1")
    db = open_database(url)
    migrate(db)
    with db.bind_ctx([User, Plan, WorkoutPlan]), db.connection_context():
        user = User.create(email="full@example.com")
        for _ in range(6):
            plan = Plan.create(user=user, goal="strength", days=3)
            WorkoutPlan.insert_many([{"plan": plan, "day": d} for d in (1, 2, 3)]).execute()
    db.close_all()
    assert fleet("workouts", "generate", "--all-pending", env=env).returncode == 0
    client = redis.Redis.from_url(private_redis.url)
    client.config_set("maxmemory-policy", "noeviction")
    log = tmp_path / "worker.log"
    with open(log, "w") as out:
        worker = processes.start("worker", "-p", "1", "-t", "3", "-Q", "workouts", env=env, stdout=out,
                                 stderr=subprocess.STDOUT)

    def days(status: str) -> int:
        db = open_database(url)
        try:
            with WorkoutPlan.bind_ctx(db), db.connection_context():
                return WorkoutPlan.select().where(WorkoutPlan.status == status).count()
        finally:
            db.close_all()

    wait_for(lambda: days("generated") >= 3, timeout=60, message="work under way")
    client.config_set("maxmemory", "1")
    wait_for(lambda: "worker paused" in log.read_text(), timeout=20, message="the worker pausing")
    time.sleep(6)
    client.config_set("maxmemory", "0")
    wait_for(lambda: days("generated") == 18, timeout=90, message="every day generated once Redis takes writes")
    assert processes.stop(worker) == 0
    lines = log.read_text().splitlines()
    assert len([line for line in lines if "worker paused" in line]) == 1
    assert len([line for line in lines if "worker resumed" in line]) == 1
    assert days("failed") == 0
    db = open_database(url)
    with JobLog.bind_ctx(db), db.connection_context():
        statuses = {s for s, in JobLog.select(JobLog.status).tuples()}
        codes = {c for c, in JobLog.select(JobLog.error_code).where(JobLog.status == "deferred").tuples()}
    db.close_all()
    assert statuses <= {"success", "deferred"}, statuses  # no retry spent, nothing failed
    assert "deferred" in statuses and codes == {"ERR_STATE_STORE"}
    assert not [k for k in client.scan_iter("fleet:*.XQ.msgs") if client.hlen(k)]  # no dead letter
