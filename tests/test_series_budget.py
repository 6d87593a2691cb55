"""The series API's shared budget and token: `fleet worker` processes and in-process workers
against the series API simulator, which counts the requests it gets in each second."""
from __future__ import annotations

import os

import pytest

import core.budget
from actors import series as ops
from actors.middleware.presence import live_workers
from core.budget import ApiBudget, budget
from core.state import state_redis
from db.models.jobs import JobLog
from db.models.series import Series
from tests.helpers import InProcessWorker, wait_for


@pytest.fixture
def start_workers(processes, broker):
    """`fleet worker -p P -t T` subprocesses (stopped with SIGTERM, as supervisord does, at the end)."""
    def start(count: int, threads: int, **env):
        proc = processes.start("worker", "-p", str(count), "-t", str(threads), env={**os.environ, **env})
        # every process consumes before anything is sent, so none can take all the work alone
        wait_for(lambda: len(live_workers(state_redis(), 10)) >= count, timeout=60, message="the worker processes")
        return proc

    return start


def imported() -> int:
    return Series.select().where(Series.data_last_updated_at.is_null(False)).count()


def test_one_login_for_many_jobs_across_two_worker_processes(db, broker, series_api, start_workers):
    ops.add_series(range(100, 160))
    start_workers(2, 4)
    assert ops.import_missing(ops.SERIES)["enqueued"] == 60
    wait_for(lambda: imported() == 60, timeout=60, message="60 series imported")
    assert series_api.stats()["logins"] == 1
    workers = {w for (w,) in JobLog.select(JobLog.worker).where(JobLog.job_class == "series_data").tuples()}
    assert len(workers) == 2  # both processes did data jobs, with the one token


def test_the_shared_budget_holds_across_two_worker_processes(db, broker, series_api, start_workers):
    """SERIES_API_RATE=20 for 16 threads in two processes: the API sees at most 21 requests in any second."""
    ops.add_series(range(1_000, 1_200))
    start_workers(2, 8, SERIES_API_RATE="20")
    assert ops.import_missing(ops.SERIES)["enqueued"] == 200
    wait_for(lambda: imported() == 200, timeout=90, message="200 series imported")
    stats = series_api.stats()
    per_second = stats["per_second"]
    assert stats["requests"] == 200 and sum(per_second.values()) == 200
    assert stats["max_per_second"] <= 21, per_second
    rows = list(JobLog.select().where(JobLog.job_class == "series_data"))
    assert all(r.attempt == 1 for r in rows) and not [r for r in rows if r.status in ("failed", "retrying")]


def test_jobs_over_budget_wait_and_are_deferred_without_spending_retries(db, broker, series_api, monkeypatch):
    """One request a second for four threads: a job that waited its two seconds goes back, delayed."""
    monkeypatch.setitem(core.budget._budgets, "series_api", ApiBudget("series_api", 1, state_redis()))
    rows = [Series.create(tvdb_id=i) for i in range(1, 7)]
    worker = InProcessWorker(broker, worker_threads=4, worker_timeout=100)
    worker.start()
    try:
        for row in rows:
            ops.series_data.send(row.id)
        wait_for(lambda: imported() == 6, timeout=60, message="6 series imported")
        broker.join("data", timeout=30_000)
    finally:
        worker.stop()
    assert series_api.stats()["max_per_second"] <= 2  # 1 a second, arrivals a hair apart may share one
    logged = wait_for(lambda: (r := list(JobLog.select().where(JobLog.job_class == "series_data")))
                      and len([x for x in r if x.status == "success"]) == 6 and r, timeout=10, message="JobLog rows")
    deferred = [r for r in logged if r.status == "deferred"]
    assert deferred, "four threads at one request a second: some job waits longer than two seconds"
    assert all(r.error_code == "ERR_RATE_LIMIT" and "over the shared series_api budget of 1 request(s)/s" in r.message
               and "no retry spent" in r.message for r in deferred)
    assert {r.attempt for r in logged} == {1}  # deferrals spend no retry


def test_a_429_shrinks_the_budget_for_its_retry_after(db, broker, worker, series_api):
    series_api.control(sequence=["429"], retry_after=30)
    row = Series.create(tvdb_id=81189)
    message = ops.series_data.send(row.id)
    wait_for(lambda: JobLog.select().where((JobLog.message_id == message.message_id)
                                           & (JobLog.status == "retrying")).exists(), timeout=20,
             message="the job retrying after the 429")
    shared = budget("series_api")
    usage = shared.usage()
    assert shared.current_rate() == usage["current_rate"] == 10
    assert 20 < usage["shrunk_for_seconds"] <= 30
    assert shared.shrink(30) == 5  # a further 429 halves it again
    state_redis().delete("fleet:budget:series_api:shrunk")
    assert shared.current_rate() == 20
