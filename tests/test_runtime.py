"""The job runtime with real Redis and real workers: JobLog, retries, unique jobs, traces, dead letters."""
import json
import logging
import uuid

import pytest

from core import dead_letters, trace
from core.state import state_redis
from db.models.jobs import JobLog
from tests import worker_actors as wa
from tests.conftest import TEST_OPENAI_KEY
from tests.helpers import InProcessWorker, fleet, wait_for


def notes(key):
    return [v.decode() for v in state_redis().lrange(f"test:{key}", 0, -1)]


def rows(message_id=None, **where):
    query = JobLog.select().order_by(JobLog.id)
    if message_id:
        query = query.where(JobLog.message_id == message_id)
    for field, value in where.items():
        query = query.where(getattr(JobLog, field) == value)
    return list(query)


def finished_rows(message_id, n):
    return wait_for(lambda: (r := rows(message_id)) and len([x for x in r if x.status != "started"]) >= n and r,
                    timeout=30, message=f"{n} finished JobLog rows")


@pytest.fixture
def key():
    return uuid.uuid4().hex[:12]


def test_success_writes_one_joblog_row_with_trace_and_duration(db, worker, key):
    with trace.traced("trace-abc") as trace_id:
        message = wa.flaky.send(key, 0)
    [row] = finished_rows(message.message_id, 1)
    assert (row.status, row.job_class, row.queue, row.attempt) == ("success", "flaky", "tests", 1)
    assert row.trace_id == trace_id == "trace-abc"
    assert row.duration_seconds is not None and row.duration_seconds >= 0
    assert row.worker and row.finished_at and row.error_code is None
    assert json.loads(row.args)["args"] == [key, 0]


def test_retryable_failure_retries_after_the_configured_delays_then_succeeds(db, worker, key):
    message = wa.flaky.send(key, 2)
    got = finished_rows(message.message_id, 3)
    assert [r.status for r in got] == ["retrying", "retrying", "success"]
    assert [r.attempt for r in got] == [1, 2, 3]
    assert [r.error_code for r in got] == ["ERR_API_UNAVAILABLE", "ERR_API_UNAVAILABLE", None]
    times = [float(t) for t in notes(key)]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[0] >= 1 and gaps[1] >= 2  # retry_delays=(1, 2): never earlier than configured


def test_retry_after_is_honoured_when_longer(db, worker, key):
    message = wa.flaky.send_with_options(args=(key, 1, "ERR_RATE_LIMIT", 3.0), retry_delays=(1,))
    got = finished_rows(message.message_id, 2)
    assert [r.status for r in got] == ["retrying", "success"]
    first, second = (float(t) for t in notes(key))
    assert second - first >= 3


def test_non_retryable_failure_fails_at_once_runs_the_hook_and_is_dead_lettered(db, worker, broker, key):
    message = wa.flaky.send(key, 5, "ERR_AUTH")
    [row] = finished_rows(message.message_id, 1)
    assert (row.status, row.error_code) == ("failed", "ERR_AUTH")
    assert "planned failure ERR_AUTH" in row.message and "JobError" in row.traceback
    wait_for(lambda: notes(f"gave-up:{key}"), message="on_give_up")
    assert notes(f"gave-up:{key}") == ["ERR_AUTH"]
    assert len(notes(key)) == 1
    [letter] = dead_letters.list_dead_letters(broker)
    assert (letter.message_id, letter.actor, letter.error_code) == (message.message_id, "flaky", "ERR_AUTH")


def test_spent_budget_fails_with_the_last_code(db, worker, broker, key):
    message = wa.flaky.send_with_options(args=(key, 10, "ERR_API_TIMEOUT"), retry_delays=(0, 0))
    got = finished_rows(message.message_id, 3)
    assert [r.status for r in got] == ["retrying", "retrying", "failed"]
    wait_for(lambda: notes(f"gave-up:{key}"), message="on_give_up")
    assert notes(f"gave-up:{key}") == ["ERR_API_TIMEOUT"]
    assert dead_letters.count_dead_letters(broker) == 1


def test_dead_letters_cli_lists_requeues_and_deletes(db, worker, broker, key, fleet_env):
    env = dict(fleet_env, DATABASE_URL=__import__("os").environ["DATABASE_URL"])
    first = wa.flaky.send(key, 1, "ERR_NOT_FOUND")
    second = wa.flaky.send(key + "b", 1, "ERR_BAD_REQUEST")
    wait_for(lambda: dead_letters.count_dead_letters(broker) == 2, message="two dead letters")

    listed = fleet("jobs", "dead-letters", env=env)
    assert listed.returncode == 0
    assert first.message_id in listed.stdout and "ERR_BAD_REQUEST" in listed.stdout

    unknown = fleet("jobs", "requeue", "no-such-id", env=env)
    assert unknown.returncode == 1 and "no dead letter with id no-such-id" in unknown.stderr

    requeued = fleet("jobs", "requeue", first.message_id, env=env)
    assert requeued.returncode == 0 and "Requeued 1 dead letter(s)." in requeued.stdout
    assert "ActorNotFound" not in requeued.stderr and '"critical"' not in requeued.stderr  # actors declared
    finished_rows(first.message_id, 2)  # failed once, then succeeded after the requeue
    assert [r.status for r in rows(first.message_id)] == ["failed", "success"]

    deleted = fleet("jobs", "delete", second.message_id, env=env)
    assert deleted.returncode == 0 and dead_letters.count_dead_letters(broker) == 0
    assert fleet("jobs", "requeue", env=env).returncode == 2  # neither ids nor --all


def test_a_requeued_dead_letter_goes_through_the_unique_check(db, worker, broker, key):
    dead = wa.flaky.send_with_options(args=(key, 5, "ERR_AUTH"), unique=True)  # a message option: unique
    wait_for(lambda: dead_letters.count_dead_letters(broker) == 1, message="a dead letter")
    worker.stop()
    live = wa.flaky.send_with_options(args=(key, 5, "ERR_AUTH"), unique=True)
    assert live is not None
    result = dead_letters.requeue(broker, [dead.message_id])
    assert (result.requeued, result.in_flight) == (0, 1)  # the live lock wins: the dead letter is dropped, one copy queued
    assert broker.client.hlen("fleet:tests.msgs") == 1
    assert state_redis().get(live.options["unique_key"]).decode().split()[0] == live.message_id
    assert dead_letters.count_dead_letters(broker) == 0


def test_a_dead_letter_is_resolved_when_the_same_job_later_succeeds(db, worker, broker, key):
    other = wa.flaky.send(key + "-other", 1, "ERR_BAD_REQUEST")
    failed = wa.flaky.send(key, 1, "ERR_BAD_REQUEST")
    wait_for(lambda: dead_letters.count_dead_letters(broker) == 2, message="two dead letters")
    later = wa.flaky.send(key, 1, "ERR_BAD_REQUEST")  # the same actor and arguments: succeeds this time
    finished_rows(later.message_id, 1)
    wait_for(lambda: dead_letters.count_dead_letters(broker) == 1, message="the dead letter resolved")
    assert [d.message_id for d in dead_letters.list_dead_letters(broker)] == [other.message_id]
    assert failed.message_id != later.message_id


def test_message_options_override_the_actors(db, worker, broker, key):
    """flaky is declared with retry_delays=(1, 2); a message sent with none fails at once."""
    message = wa.flaky.send_with_options(args=(key, 1, "ERR_API_UNAVAILABLE"), retry_delays=())
    [row] = finished_rows(message.message_id, 1)
    assert (row.status, row.error_code) == ("failed", "ERR_API_UNAVAILABLE")
    wait_for(lambda: notes(f"gave-up:{key}") == ["ERR_API_UNAVAILABLE"], message="on_give_up")


def test_expected_retries_log_a_warning_with_the_code_and_give_ups_their_traceback(db, worker, key, caplog):
    caplog.set_level(logging.INFO)
    message = wa.flaky.send_with_options(args=(key, 5, "ERR_API_TIMEOUT"), retry_delays=(0,))
    finished_rows(message.message_id, 2)
    wait_for(lambda: notes(f"gave-up:{key}"), message="on_give_up")
    mine = caplog.records  # this test's only job
    retrying = [r for r in mine if r.getMessage() == "job retrying"]
    assert [(r.levelname, r.error_code, r.exc_info) for r in retrying] == [("WARNING", "ERR_API_TIMEOUT", None)]
    [failed] = [r for r in mine if r.getMessage() == "job failed"]
    assert failed.levelname == "ERROR" and failed.exc_info is not None
    assert not [r for r in mine if r.getMessage().startswith("Failed to process message")]  # Dramatiq's ERROR line


def test_the_give_up_hook_runs_first_and_again_when_it_fails(db, worker, broker, key):
    """The give-up hook runs before the dead letter is written, and runs again when it fails."""
    message = wa.gives_up.send(key)
    wait_for(lambda: dead_letters.count_dead_letters(broker) == 1, timeout=30, message="the dead letter")
    assert notes(f"hook:{key}") == ["first", "first"]  # tried again (the database was away), both before any other write
    [letter] = dead_letters.list_dead_letters(broker)
    assert (letter.message_id, letter.error_code) == (message.message_id, "ERR_BAD_REQUEST")


def test_unique_job_sent_twice_while_queued_runs_once(db, broker, key):
    # No worker yet, so the first message is still queued at the second send (a send while it
    # runs asks for one follow-up run instead: the next test).
    first = wa.unique_sleeper.send(key, 1.0)
    second = wa.unique_sleeper.send(key, 1.0)
    assert first is not None and second is None
    worker = InProcessWorker(broker, worker_threads=4)
    worker.start()
    try:
        wait_for(lambda: "done" in notes(key), message="done")
        broker.join("tests", timeout=10_000)
        worker.join()
    finally:
        worker.stop()
    assert notes(key) == ["start", "done"]
    assert wa.unique_sleeper.send(key, 1.0) is not None  # finished: the lock is gone
    assert wa.unique_sleeper.send(key + "-other", 1.0) is not None  # other arguments are other jobs


def test_sends_while_the_job_runs_get_one_follow_up_run(db, worker, broker, key):
    """The running job may have read its input before the sender changed it: one more run after it."""
    assert wa.unique_sleeper.send(key, 1.0) is not None
    wait_for(lambda: "start" in notes(key), message="start")
    assert wa.unique_sleeper.send(key, 1.0) is None  # running counts as in flight
    assert wa.unique_sleeper.send(key, 1.0) is None
    wait_for(lambda: notes(key).count("done") == 2, message="the follow-up run")
    broker.join("tests", timeout=10_000)
    worker.join()
    assert notes(key) == ["start", "done", "start", "done"]


def test_api_key_reaches_no_log_line_and_no_joblog_row(db, worker, key, caplog):
    caplog.set_level(logging.DEBUG)
    message = wa.leaks_secret.send(key)
    [row] = finished_rows(message.message_id, 1)
    assert row.status == "failed" and row.error_code == "ERR_INTERNAL"
    stored = " ".join(str(getattr(row, f)) for f in ("message", "traceback", "args"))
    assert TEST_OPENAI_KEY not in stored and "***" in stored
    from core.logs import JsonFormatter

    formatted = [JsonFormatter().format(r) for r in caplog.records]
    assert any("calling with key" in line for line in formatted)
    assert not any(TEST_OPENAI_KEY in line for line in formatted)


def test_cleanup_deletes_old_finished_rows_in_batches_but_keeps_the_newest(db, fleet_env):
    import os
    from datetime import timedelta

    from db.models import utcnow

    old = utcnow() - timedelta(days=10)
    fresh = utcnow()
    JobLog.insert_many(
        [dict(run_id=uuid.uuid4().hex, job_class="a", message_id="s", queue="q", status="started", created_at=old)]
        + [dict(run_id=uuid.uuid4().hex, job_class="a", message_id=str(i), queue="q", status="success", created_at=old) for i in range(250)]
        + [dict(run_id=uuid.uuid4().hex, job_class="a", message_id=f"n{i}", queue="q", status="failed", created_at=fresh) for i in range(20)]
    ).execute()
    env = dict(fleet_env, DATABASE_URL=os.environ["DATABASE_URL"])
    result = fleet("jobs", "cleanup", "--days", "7", "--keep", "100", env=env)
    assert result.returncode == 0, result.stderr
    # 271 rows: the newest 100 stay (20 fresh + 80 old); the oldest, still 'started', is not finished
    assert result.stdout.splitlines()[0] == "Deleted 170 job log row(s) older than 7 day(s); kept the newest 100."
    assert JobLog.select().count() == 101
    assert JobLog.select().where(JobLog.status == "started").count() == 1
    again = fleet("jobs", "cleanup", env=env)
    assert "Deleted 0 job log row(s)" in again.stdout


def test_statistics_of_the_seed_are_queries(db, worker, broker, key):
    from datetime import datetime, timezone

    from actors.jobs import stats_by_class, successes_since

    for _ in range(3):
        wa.count.send(key)
    broker.join("tests", timeout=10_000)
    wait_for(lambda: len(rows(job_class="count", status="success")) == 3, message="3 rows")
    midnight = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    assert successes_since("count", midnight) == 3
    [stats] = [s for s in stats_by_class(midnight) if s["job_class"] == "count"]
    assert stats["counts"] == {"success": 3} and stats["avg_success_seconds"] >= 0


def test_rows_of_different_outcomes_written_in_one_batch_keep_their_codes(db, settings):
    """A finished row after a started one in the same batch must not lose its error code."""
    from dramatiq import Message
    from dramatiq.broker import MessageProxy

    from actors.middleware.joblog import JobLogWriter
    from actors.middleware.outcome import Outcome, set_outcome
    from core.errors import CODES, Classified

    writer = JobLogWriter()
    running = MessageProxy(Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={}))
    failing = MessageProxy(Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={}))
    writer.before_process_message(None, running)
    writer.before_process_message(None, failing)
    set_outcome(failing, Outcome("failed", Classified(CODES["ERR_AUTH"], "refused")))
    writer.after_process_message(None, failing, exception=RuntimeError("refused"))
    writer.flush()
    stored = {r.message_id: r for r in JobLog.select()}
    assert stored[running.message_id].status == "started"
    assert (stored[failing.message_id].status, stored[failing.message_id].error_code) == ("failed", "ERR_AUTH")


def test_joblog_writer_writes_to_postgresql(postgres_url, settings):
    from dramatiq import Message
    from dramatiq.broker import MessageProxy

    from actors.middleware.joblog import JobLogWriter
    from db.database import database, open_database
    from db.migrate import migrate

    pg = open_database(postgres_url)
    migrate(pg)
    previous = database.obj
    database.initialize(pg)
    try:
        writer = JobLogWriter()
        messages = [MessageProxy(Message(queue_name="q", actor_name="pg", args=(i,), kwargs={}, options={}))
                    for i in range(3)]
        for m in messages:
            writer.before_process_message(None, m)
        writer.flush()  # three 'started' rows inserted
        for m in messages[:2]:
            writer.after_process_message(None, m)
        writer.flush()  # two of them updated
        with database.connection_context():
            got = {r.message_id: r for r in JobLog.select().where(JobLog.job_class == "pg")}
        assert sorted(r.status for r in got.values()) == ["started", "success", "success"]
        assert all(r.created_at is not None for r in got.values())
        assert got[messages[0].message_id].duration_seconds is not None
    finally:
        database.initialize(previous)
