"""The batch runtime with a real worker, real Redis and SQLite: chunks, counters, the one
finish, cancel, resume, retry, pruning. Items are the test kind of tests/batch_kinds.py."""
from __future__ import annotations

import contextlib
from collections import Counter, defaultdict
from datetime import timedelta

import pytest

from actors import batches as ops
from actors.middleware.unique import unique_key
from core.errors import FleetError
from core.settings import SettingsError, load_settings
from core.state import state_redis
from db.models import utcnow
from db.models.batches import Batch, BatchChunk, BatchItem
from db.models.jobs import JobLog
from tests import batch_kinds as bk
from tests.helpers import InProcessWorker, wait_for


def finished(batch_id: str, timeout: float = 60) -> Batch:
    return wait_for(lambda: (b := Batch.get_by_id(batch_id)).finished_at and b, timeout=timeout,
                    message=f"batch {batch_id} to finish")


def chunk_sums(batch_id: str) -> dict:
    rows = list(BatchChunk.select().where(BatchChunk.batch == batch_id))
    return {name: sum(getattr(r, name) for r in rows) for name in ("processed", "succeeded", "failed", "tokens")}


def assert_counters_match_items(batch: Batch) -> None:
    """The chunk rows, the batch's stamped totals and a recount of the items all agree."""
    recount = ops.recount(batch.id)
    assert {k: recount[k] for k in ("processed", "succeeded", "failed", "tokens")} == chunk_sums(batch.id)
    assert (batch.processed, batch.succeeded, batch.failed, batch.cancelled, batch.tokens) == (
        recount["processed"], recount["succeeded"], recount["failed"], recount["cancelled"], recount["tokens"])
    assert batch.cost_usd == pytest.approx(recount["cost_usd"])


def finish_rows(batch_id: str) -> list[JobLog]:
    return list(JobLog.select().where((JobLog.job_class == "batch") & (JobLog.message_id == batch_id)))


def queued_chunks(broker) -> int:
    return broker.client.hlen("fleet:tests.msgs")


# -- chunks -----------------------------------------------------------------------------------

def test_a_batch_is_sent_as_chunks_of_at_most_50_items_each_run_once(db, broker):
    batch = ops.create_batch(bk.KIND, "chunks", [f"ok:{i}" for i in range(120)], created_by="ops@example.com")
    assert (batch.status, batch.total, batch.chunk_size) == ("queued", 120, 50)
    assert queued_chunks(broker) == 3  # 50 + 50 + 20, sent before any worker runs
    assert [c.number for c in BatchChunk.select().where(BatchChunk.batch == batch.id).order_by(BatchChunk.number)] == [0, 1, 2]

    worker = InProcessWorker(broker, worker_threads=4, worker_timeout=100)
    worker.start()
    try:
        done = finished(batch.id)
    finally:
        worker.stop()
    assert (done.status, done.processed, done.succeeded, done.failed) == ("completed", 120, 120, 0)
    runs = bk.runs(batch.id)
    assert sorted(position for _, position in runs) == list(range(120))  # every item once
    by_job = defaultdict(list)
    for owner, position in runs:
        by_job[owner].append(position)
    assert len(by_job) == 3
    for positions in by_job.values():  # a job works one chunk, in order
        assert len(positions) <= 50 and positions == sorted(positions) and len({p // 50 for p in positions}) == 1
    assert done.cost_usd == pytest.approx(120 * bk.COST) and done.tokens == 120 * bk.TOKENS
    assert_counters_match_items(done)
    assert len(finish_rows(batch.id)) == 1


def test_a_chunk_holds_at_most_50_items_whatever_the_setting(db):
    with pytest.raises(SettingsError, match="FLEET_BATCH_CHUNK"):
        load_settings({"FLEET_BATCH_CHUNK": "51"})
    with pytest.raises(SettingsError, match="FLEET_BATCH_CHUNK"):
        load_settings({"FLEET_BATCH_CHUNK": "0"})
    assert load_settings({"FLEET_BATCH_CHUNK": "7"}).batch_chunk == 7
    with pytest.raises(FleetError, match="1 to 50"):
        ops.create_batch(bk.KIND, "too big", ["ok:a"], chunk_size=51)
    assert Batch.select().count() == 0


# -- the one finish ---------------------------------------------------------------------------

def test_the_finish_happens_once_when_many_jobs_end_together(db, broker):
    """A chunk a item, eight threads: many chunk jobs see "nothing open" at the same moment."""
    calls = []
    hook = ops.on_finish(lambda b: calls.append(b.id))
    try:
        batches = [ops.create_batch(bk.KIND, f"race {n}", [f"sleep:0.05:{i}" for i in range(16)], chunk_size=1)
                   for n in range(3)]
        worker = InProcessWorker(broker, worker_threads=8, worker_timeout=50)
        worker.start()
        try:
            done = [finished(b.id) for b in batches]
        finally:
            worker.stop()
    finally:
        ops.FINISH_HOOKS.remove(hook)
    for batch in done:
        assert batch.status == "completed" and batch.succeeded == 16
        rows = finish_rows(batch.id)
        assert len(rows) == 1 and rows[0].status == "success" and "16 succeeded" in rows[0].message
        assert_counters_match_items(batch)
    assert sorted(calls) == sorted(b.id for b in batches)  # the hook ran once a batch


def test_failed_items_are_counted_and_the_batch_completes_with_failures(db, broker, worker):
    keys = ["ok:a", "fail:ERR_BAD_REQUEST:b", "ok:c", "fail:ERR_NOT_FOUND:d", "fail:ERR_BAD_REQUEST:e"]
    batch = ops.create_batch(bk.KIND, "failures", keys, chunk_size=2)
    done = finished(batch.id)
    assert (done.status, ops.status_label(done)) == ("completed", "completed with 3 failures")
    assert (done.processed, done.succeeded, done.failed) == (5, 2, 3)
    assert ops.errors(batch.id) == [
        {"code": "ERR_BAD_REQUEST", "sentence": "The external API rejected the request as invalid (HTTP 400/422).", "count": 2},
        {"code": "ERR_NOT_FOUND", "sentence": "The external API does not know the requested item (HTTP 404).", "count": 1}]
    failed = ops.items(batch.id, "failed")
    assert [(i.key, i.error_code, i.attempts) for i in failed] == [
        ("fail:ERR_BAD_REQUEST:b", "ERR_BAD_REQUEST", 1), ("fail:ERR_NOT_FOUND:d", "ERR_NOT_FOUND", 1),
        ("fail:ERR_BAD_REQUEST:e", "ERR_BAD_REQUEST", 1)]
    assert all(i.cost_usd == pytest.approx(bk.COST) for i in failed)  # what a failed attempt cost still counts
    row = finish_rows(batch.id)[0]
    assert (row.status, row.error_code) == ("failed", "ERR_BAD_REQUEST")
    assert_counters_match_items(done)


# -- retries of a chunk -----------------------------------------------------------------------

def test_a_retryable_error_retries_the_chunk_without_running_done_items_again(db, broker, worker):
    batch = ops.create_batch(bk.KIND, "flaky", ["ok:a", "ok:b", "flaky:1:c", "ok:d"])
    done = finished(batch.id)
    assert (done.status, done.succeeded) == ("completed", 4)
    ran = Counter(position for _, position in bk.runs(batch.id))
    assert ran == {0: 1, 1: 1, 2: 2, 3: 1}  # a and b were not run again by the retry
    flaky = ops.items(batch.id)[2]
    assert flaky.attempts == 2 and flaky.status == "succeeded" and flaky.error_code is None
    assert done.cost_usd == pytest.approx(5 * bk.COST)  # the failed attempt's charge counts
    assert_counters_match_items(done)


def test_a_spent_retry_budget_fails_the_chunks_open_items_with_the_code(db, broker, worker):
    batch = ops.create_batch(bk.KIND, "outage", ["ok:a", "flaky:9:b", "ok:c", "ok:d"])
    done = finished(batch.id, timeout=30)  # the test kind retries twice, after 1 s each
    assert (done.status, done.succeeded, done.failed) == ("completed", 1, 3)
    items = ops.items(batch.id)
    assert [(i.status, i.error_code, i.attempts) for i in items] == [
        ("succeeded", None, 1), ("failed", "ERR_API_UNAVAILABLE", 3),
        ("failed", "ERR_API_UNAVAILABLE", 0), ("failed", "ERR_API_UNAVAILABLE", 0)]
    assert items[1].error_message == "planned outage for flaky:9:b"
    assert items[2].error_message.startswith("not attempted: the chunk gave up after planned outage")
    assert Counter(p for _, p in bk.runs(batch.id)) == {0: 1, 1: 3}
    assert len(finish_rows(batch.id)) == 1
    assert_counters_match_items(done)


def test_a_kind_may_work_a_group_of_items_at_once(db, broker, worker):
    """A `many` kind gets its chunk's items in one call; an error it raises hands the group back."""
    keys = ["ok:a", "fail:ERR_BAD_REQUEST:b", "ok:c", "flaky:1:d", "ok:e"]
    batch = ops.create_batch(bk.MANY_KIND, "together", keys, chunk_size=2)
    done = finished(batch.id, timeout=30)
    assert (done.status, done.succeeded, done.failed) == ("completed", 4, 1)
    items = ops.items(batch.id)
    assert [(i.status, i.error_code) for i in items] == [
        ("succeeded", None), ("failed", "ERR_BAD_REQUEST"), ("succeeded", None), ("succeeded", None), ("succeeded", None)]
    ran = Counter(p for _, p in bk.runs(batch.id))
    assert ran == {0: 1, 1: 1, 2: 2, 3: 2, 4: 1}  # only the group that met the rate limit ran again
    assert [i.attempts for i in items] == [1, 1, 2, 2, 1]
    by_job = defaultdict(set)
    for owner, position in bk.runs(batch.id):
        by_job[owner].add(position)
    assert sorted(map(sorted, by_job.values())) == [[0, 1], [2, 3], [4]]
    assert len(finish_rows(batch.id)) == 1
    assert_counters_match_items(done)


# -- cancel, retry, resume --------------------------------------------------------------------

def test_cancel_mid_way_lets_the_running_item_finish_and_runs_nothing_after(db, broker):
    batch = ops.create_batch(bk.KIND, "long", [f"sleep:0.2:{i}" for i in range(20)], chunk_size=10)
    worker = InProcessWorker(broker, worker_threads=2, worker_timeout=50)
    worker.start()
    try:
        wait_for(lambda: chunk_sums(batch.id)["processed"] >= 3, timeout=30, message="three items done")
        cancelled = ops.cancel(batch.id)
        assert 0 < cancelled <= 17
        assert Batch.get_by_id(batch.id).status == "cancelled"
        done = finished(batch.id)
        ran = len(bk.runs(batch.id))
        broker.join("tests", timeout=10_000)
    finally:
        worker.stop()
    assert done.status == "cancelled" and ops.status_label(done) == "cancelled"
    assert (done.succeeded, done.cancelled) == (20 - cancelled, cancelled)
    assert ran == 20 - cancelled == len(bk.runs(batch.id))  # nothing ran after the cancel but what was running
    assert BatchItem.select().where((BatchItem.batch == batch.id) & (BatchItem.status == "cancelled")).count() == cancelled
    assert len(finish_rows(batch.id)) == 1 and ops.cancel(batch.id) == 0
    with pytest.raises(FleetError, match="was cancelled"):
        ops.retry(batch.id)
    assert_counters_match_items(done)


@pytest.fixture
def run_worker(broker):
    """Start a worker, run the block, stop it (a test that looks at the ledger between two runs)."""

    @contextlib.contextmanager
    def running(threads: int = 4):
        worker = InProcessWorker(broker, worker_threads=threads, worker_timeout=50)
        worker.start()
        try:
            yield worker
        finally:
            worker.stop()

    return running


def test_retry_runs_only_the_failed_items_again_in_the_same_batch(db, broker, run_worker):
    keys = ["ok:a", "fail:ERR_INVALID_RESPONSE:r1", "ok:b", "fail:ERR_INVALID_RESPONSE:r2"]
    batch = ops.create_batch(bk.KIND, "retry", keys, chunk_size=2)
    with run_worker():
        first = finished(batch.id)
    assert (first.succeeded, first.failed) == (2, 2)
    bk.heal("r1")
    bk.heal("r2")

    assert ops.retry(batch.id) == 2
    reopened = Batch.get_by_id(batch.id)
    assert (reopened.status, reopened.finished_at) == ("processing", None)
    assert chunk_sums(batch.id) | {"tokens": 0} == {"processed": 2, "succeeded": 2, "failed": 0, "tokens": 0}
    assert [i.status for i in ops.items(batch.id)] == ["succeeded", "pending", "succeeded", "pending"]
    assert queued_chunks(broker) == 2
    with run_worker():
        done = finished(batch.id)
    assert (done.status, done.succeeded, done.failed) == ("completed", 4, 0)
    assert Counter(p for _, p in bk.runs(batch.id)) == {0: 1, 1: 2, 2: 1, 3: 2}  # only the failed ones again
    assert [i.attempts for i in ops.items(batch.id)] == [1, 2, 1, 2]
    assert len(finish_rows(batch.id)) == 2  # a finish a run of the batch
    assert ops.retry(batch.id) == 0
    assert_counters_match_items(done)


def test_resume_sends_nothing_while_every_chunk_is_queued(db, broker):
    batch = ops.create_batch(bk.KIND, "queued", [f"ok:{i}" for i in range(10)], chunk_size=4)
    report = ops.resume(batch.id)
    assert (report.sent, report.in_flight) == (0, 3)
    assert queued_chunks(broker) == 3


def test_resume_sends_again_the_chunks_whose_jobs_were_lost(db, broker, run_worker):
    """The broker lost the messages and their locks (e.g. a Redis without persistence restarted),
    and a worker that died for good left an item running."""
    batch = ops.create_batch(bk.KIND, "lost", [f"ok:{i}" for i in range(10)], chunk_size=4)
    BatchItem.update(status="running", owner="a-dead-job", attempts=1).where(
        (BatchItem.batch == batch.id) & (BatchItem.position == 5)).execute()
    broker.client.flushdb()

    report = ops.resume(batch.id)
    assert (report.sent, report.in_flight) == (3, 0)
    assert ops.resume(batch.id).sent == 0  # now they are queued: a second resume sends nothing
    with run_worker():
        done = finished(batch.id)
    assert (done.status, done.succeeded) == ("completed", 10)
    assert sorted(p for _, p in bk.runs(batch.id)) == list(range(10))  # the dead job's item too, once
    assert ops.items(batch.id)[5].attempts == 2
    assert len(finish_rows(batch.id)) == 1
    assert_counters_match_items(done)


def test_a_job_that_does_not_hold_its_chunk_leaves_another_jobs_running_items_alone(db, broker):
    """Two copies of a chunk's job (a lock that expired, a dead letter requeued by hand): only
    the holder of the chunk's lock takes over items another message has running."""
    batch = ops.create_batch(bk.KIND, "two copies", ["ok:a", "ok:b", "ok:c"])
    BatchItem.update(status="running", owner="a-live-job", attempts=1).where(
        (BatchItem.batch == batch.id) & (BatchItem.position == 1)).execute()
    kind = ops.KINDS[bk.KIND]
    state_redis().set(unique_key(kind.actor.actor_name, [batch.id, 0], {}), "a-live-job")
    ops.work_chunk(kind, batch.id, 0)  # a copy that is not the lock holder
    assert [i.status for i in ops.items(batch.id)] == ["succeeded", "running", "succeeded"]
    assert Batch.get_by_id(batch.id).finished_at is None
    assert sorted(p for _, p in bk.runs(batch.id)) == [0, 2]


def test_resuming_a_cancelled_batch_cancels_what_its_lost_job_left_running(db, broker, run_worker):
    batch = ops.create_batch(bk.KIND, "cancelled, then lost", ["ok:a", "ok:b", "ok:c"])
    BatchItem.update(status="running", owner="a-dead-job", attempts=1).where(
        (BatchItem.batch == batch.id) & (BatchItem.position == 0)).execute()
    assert ops.cancel(batch.id) == 2
    broker.client.flushdb()
    assert ops.resume(batch.id).sent == 1
    with run_worker():
        done = finished(batch.id)
    assert (done.status, done.cancelled, done.processed) == ("cancelled", 3, 0)
    assert bk.runs(batch.id) == []
    assert_counters_match_items(done)


def test_resume_finishes_a_batch_whose_last_job_died_before_finishing_it(db, broker):
    batch = ops.create_batch(bk.KIND, "unfinished", ["ok:a"])
    BatchItem.update(status="succeeded", finished_at=utcnow()).where(BatchItem.batch == batch.id).execute()
    BatchChunk.update(processed=1, succeeded=1).where(BatchChunk.batch == batch.id).execute()
    report = ops.resume(batch.id)
    assert report.finished and Batch.get_by_id(batch.id).status == "completed"
    assert len(finish_rows(batch.id)) == 1


def test_the_periodic_resume_is_a_registered_task(db, broker, run_worker):
    from actors.runtime import TASKS

    assert TASKS["batches.resume-stale"] is ops.resume_stale_batches
    old = ops.create_batch(bk.KIND, "old", ["ok:a", "ok:b"])
    young = ops.create_batch(bk.KIND, "young", ["ok:c"])
    Batch.update(created_at=utcnow() - timedelta(minutes=10)).where(Batch.id == old.id).execute()
    broker.client.flushdb()  # both lost their chunk jobs
    ops.resume_stale_batches(minutes=5)
    assert queued_chunks(broker) == 1  # only the old one; the young one may still be being sent
    with run_worker():
        assert finished(old.id).status == "completed"
    assert Batch.get_by_id(young.id).finished_at is None


def test_a_batch_of_a_kind_no_longer_known_fails_on_resume(db, broker):
    batch = ops.create_batch(bk.KIND, "orphan", ["ok:a", "ok:b"])
    Batch.update(kind="gone").where(Batch.id == batch.id).execute()
    ops.resume(batch.id)
    done = Batch.get_by_id(batch.id)
    assert (done.status, done.failed) == ("failed", 2) and done.finished_at is not None
    assert ops.items(batch.id)[0].error_code == "ERR_INTERNAL"


def test_chunk_locks_are_the_runtimes_unique_locks(db, broker):
    """resume tells queued chunks by their unique lock; this fails if the lock format changes."""
    batch = ops.create_batch(bk.KIND, "lock", ["ok:a"])
    actor = ops.KINDS[bk.KIND].actor
    assert state_redis().exists(unique_key(actor.actor_name, [batch.id, 0], {}))


# -- reading ----------------------------------------------------------------------------------

def test_progress_read_through_the_api_never_goes_back(db, broker, admin_client):
    batch = ops.create_batch(bk.KIND, "monotonic", [f"sleep:0.02:{i}" for i in range(150)], chunk_size=10)
    seen = []
    worker = InProcessWorker(broker, worker_threads=6, worker_timeout=50)
    worker.start()
    try:
        while True:
            data = admin_client.get(f"/api/batches/{batch.id}").json
            seen.append((data["processed"], data["succeeded"], data["percent"]))
            if data["finished"]:
                break
    finally:
        worker.stop()
    assert len(seen) > 5 and seen[-1] == (150, 150, 100.0)
    for earlier, later in zip(seen, seen[1:]):
        assert all(a <= b for a, b in zip(earlier, later)), (earlier, later)
    assert len({p for p, _, _ in seen}) > 3  # it was read while it ran, not only at the end


def test_find_batch_by_prefix_and_unknown_ids(db, broker):
    batch = ops.create_batch(bk.KIND, "find", ["ok:a"])
    assert ops.find_batch(batch.id[:8]).id == batch.id
    assert ops.find_batch(batch.id.upper()).id == batch.id
    for ref in ("nope", "", batch.id[:3], "'; DROP TABLE batch; --"):
        with pytest.raises(FleetError, match="no batch with id"):
            ops.find_batch(ref)


# -- cleanup ----------------------------------------------------------------------------------

def test_prune_deletes_old_finished_batches_with_their_items_and_keeps_the_newest(db, broker):
    long_ago = utcnow() - timedelta(days=40)
    made = []
    for n in range(4):
        batch = ops.create_batch(bk.KIND, f"old {n}", ["ok:a", "ok:b"])
        Batch.update(created_at=long_ago + timedelta(minutes=n), finished_at=long_ago + timedelta(minutes=n),
                     status="completed").where(Batch.id == batch.id).execute()
        made.append(batch.id)
    running = ops.create_batch(bk.KIND, "old but running", ["ok:c"])
    Batch.update(created_at=long_ago - timedelta(days=1)).where(Batch.id == running.id).execute()
    recent = ops.create_batch(bk.KIND, "recent", ["ok:d"])
    Batch.update(finished_at=utcnow(), status="completed").where(Batch.id == recent.id).execute()

    assert ops.prune(days=30, keep=3) == 2  # the newest three are recent, old 3 and old 2
    assert {b.id for b in Batch.select()} == {made[2], made[3], running.id, recent.id}
    assert BatchItem.select().where(BatchItem.batch.in_(made[:2])).count() == 0
    assert BatchChunk.select().where(BatchChunk.batch.in_(made[:2])).count() == 0
    assert BatchItem.select().where(BatchItem.batch == made[2]).count() == 2
    assert ops.prune(days=30, keep=0) == 2  # never the unfinished one, never the recent one
    assert {b.id for b in Batch.select()} == {running.id, recent.id}


# -- PostgreSQL -------------------------------------------------------------------------------

@pytest.fixture
def on_postgresql(postgres_url, db):
    """The models bound to the session's PostgreSQL database, migrated, batch tables empty."""
    from db.database import database, open_database
    from db.migrate import migrate

    pg = open_database(postgres_url)
    migrate(pg)
    previous = database.obj
    database.initialize(pg)
    try:
        with database.connection_context():
            for table in ("batch_item", "batch_chunk", "batch"):
                database.execute_sql(f'DELETE FROM "{table}"')
            database.execute_sql("DELETE FROM job_log WHERE job_class = 'batch'")
        yield pg
    finally:
        pg.close_all()
        database.initialize(previous)


def test_the_runtime_on_postgresql(on_postgresql, broker, run_worker):
    """Row locks instead of SQLite's one lock: eight threads finishing chunks of one item at the
    same moment still finish each batch once; cancel and retry take the batch row's lock."""
    made = [ops.create_batch(bk.KIND, f"pg {n}", [f"sleep:0.02:{i}" for i in range(12)], chunk_size=1)
            for n in range(3)]
    with_failure = ops.create_batch(bk.KIND, "pg retry", ["ok:a", "fail:ERR_BAD_REQUEST:pg-retry"], chunk_size=1)
    with run_worker(threads=8):
        done = [finished(b.id) for b in [*made, with_failure]]
        bk.heal("pg-retry")
        assert ops.retry(with_failure.id) == 1
        retried = finished(with_failure.id)
        stopped = ops.create_batch(bk.KIND, "pg cancel", [f"sleep:0.05:{i}" for i in range(40)], chunk_size=5)
        wait_for(lambda: chunk_sums(stopped.id)["processed"] >= 2, timeout=30, message="a few items done")
        ops.cancel(stopped.id)
        cancelled = finished(stopped.id)
    for batch in done[:3]:
        assert (batch.status, batch.succeeded) == ("completed", 12) and len(finish_rows(batch.id)) == 1
        assert_counters_match_items(batch)
    assert (retried.succeeded, retried.failed, len(finish_rows(retried.id))) == (2, 0, 2)
    assert cancelled.status == "cancelled" and cancelled.succeeded + cancelled.cancelled == 40
    assert_counters_match_items(cancelled)
