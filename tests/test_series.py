"""Series data sync end to end: the real `fleet` CLI, real workers (in-process and `fleet worker`
processes), the series API simulator over HTTP, the test Redis and SQLite."""
from __future__ import annotations

import json
import os
import threading
from datetime import timedelta

import pytest

from actors import series as ops
from core.simulators.series_sim import series_record
from db.models import utcnow
from db.models.jobs import JobLog
from db.models.series import Episode, Series
from tests.helpers import InProcessWorker, fleet, usage_error, wait_for


def run(*args):
    return fleet(*args, env=dict(os.environ))


def drain(broker, queue: str = "data", seconds: float = 60) -> None:
    broker.join(queue, timeout=int(seconds * 1000))


def episode_count(*tvdb_ids: int) -> int:
    return sum(series_record(i)["episodeCount"] for i in tvdb_ids)


def joblog_rows(message_id: str) -> list[JobLog]:
    return list(JobLog.select().where(JobLog.message_id == message_id).order_by(JobLog.id))


def finished_row(message_id: str) -> JobLog:
    return wait_for(lambda: [r for r in joblog_rows(message_id) if r.status != "started"], timeout=10,
                    message="the job's JobLog row")[-1]


@pytest.fixture
def sweeps_worker(broker):
    """A worker for the sweeps queue only: data jobs stay queued, as on a fleet whose data workers are busy."""
    worker = InProcessWorker(broker, queues={"sweeps"}, worker_threads=2, worker_timeout=100)
    worker.start()
    yield worker
    worker.stop()


# -- the seed's three stages ---------------------------------------------------------------------

def test_import_missing_then_episodes_then_check_updates(db, broker, worker, series_api):
    assert ops.add_series([81189, 79126, 7]) == (3, 0)

    first = run("series", "import-missing-data")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "Found 3 series without data; dispatched 3 data job(s), 0 already queued."
    drain(broker)
    for row in Series.select():
        record = series_record(row.tvdb_id)
        assert row.data["name"] == row.name == record["name"] and "episodes" not in row.data
        assert row.data_last_updated_at is not None and row.error_code is None
    episodes = episode_count(81189, 79126, 7)
    assert Episode.select().count() == episodes
    assert Episode.select().where(Episode.data_last_updated_at.is_null()).count() == episodes  # only listed so far
    ep = Episode.get(Episode.tvdb_id == 81189 * 100 + 7)
    assert (ep.season, ep.number, ep.series.tvdb_id) == (2, 1, 81189)

    second = run("episodes", "import-missing-data")
    assert second.stdout.strip() == f"Found {episodes} episodes without data; dispatched {episodes} data job(s), 0 already queued."
    drain(broker)
    assert Episode.select().where(Episode.data_last_updated_at.is_null()).count() == 0
    assert Episode.get(Episode.tvdb_id == 7 * 100 + 1).data["seriesId"] == 7

    # stage 3: one series is 30 hours old, another 10: only the first is out of date at 24 h
    old, recent = utcnow() - timedelta(hours=30), utcnow() - timedelta(hours=10)
    Series.update(data_last_updated_at=old).where(Series.tvdb_id == 81189).execute()
    Series.update(data_last_updated_at=recent).where(Series.tvdb_id == 79126).execute()
    third = run("series", "check-data-updates")
    assert third.stdout.strip() == ("Found 1 series with data older than 24 hour(s); dispatched 1 data job(s), "
                                    "0 already queued.")
    drain(broker)
    assert Series.get(Series.tvdb_id == 81189).data_last_updated_at > utcnow() - timedelta(minutes=5)
    assert Series.get(Series.tvdb_id == 79126).data_last_updated_at == recent
    status = json.loads(run("series", "status", "--json").stdout)
    assert (status["without_data"], status["older"], status["fresh"], status["failed_by_code"]) == (0, 0, 3, {})
    assert json.loads(run("series", "status", "--json", "--hours", "5").stdout)["older"] == 1

    # every run of the CLI left a JobLog row with its counts
    cli_runs = list(JobLog.select().where(JobLog.queue == "cli").order_by(JobLog.id))
    assert [(r.job_class, json.loads(r.message)["enqueued"]) for r in cli_runs] == [
        ("import_missing_series_data", 3), ("import_missing_episodes_data", episodes), ("check_series_data_updates", 1)]


def test_404_is_stored_and_skipped_by_the_next_import_sweep(db, broker, worker, series_api):
    series_api.control(missing=[13])
    ops.add_series([13, 14])
    assert "dispatched 2 data job(s)" in run("series", "import-missing-data").stdout
    drain(broker)
    missing = Series.get(Series.tvdb_id == 13)
    assert (missing.error_code, missing.data, missing.data_last_updated_at) == ("ERR_NOT_FOUND", None, None)
    assert missing.failed_at is not None and "404" in missing.error_message
    assert Series.get(Series.tvdb_id == 14).error_code is None

    again = run("series", "import-missing-data")
    assert again.stdout.strip() == "Found 0 series without data; dispatched 0 data job(s), 0 already queued."
    status = run("series", "status")
    assert "Without data: 1 (1 skipped by import-missing-data" in status.stdout
    assert "  ERR_NOT_FOUND: 1" in status.stdout

    series_api.control(missing=[])  # the provider has the record now
    forced = run("series", "import-missing-data", "--include-failed")
    assert forced.stdout.strip() == "Found 1 series without data; dispatched 1 data job(s), 0 already queued."
    drain(broker)
    found = Series.get(Series.tvdb_id == 13)
    assert found.data is not None and (found.error_code, found.error_message, found.failed_at) == (None, None, None)


def test_a_sweep_run_twice_enqueues_nothing_the_second_time(db, broker, sweeps_worker, series_api):
    ops.add_series(range(1, 1_501))  # two pages
    first = run("series", "import-missing-data")
    assert first.stdout.strip() == "Found 1500 series without data; dispatched 1500 data job(s), 0 already queued."
    second = run("series", "import-missing-data")
    assert second.stdout.strip() == "Found 1500 series without data; dispatched 0 data job(s), 1500 already queued."
    assert broker.client.hlen("fleet:data.msgs") == 1_500

    # the same as a job (the scheduler's way): its JobLog row carries the counts
    message = ops.import_missing_series_data.send()
    drain(broker, "sweeps")
    row = finished_row(message.message_id)
    assert row.status == "success"
    assert json.loads(row.message) == {"found": 1500, "enqueued": 0, "already_queued": 1500, "include_failed": False}


def test_two_runs_of_a_sweep_at_once_only_one_runs(db, broker, sweeps_worker, series_api):
    """One run holds the sweep after its first page; a second CLI run and a run as a job
    (as the scheduler or the panel start it) meanwhile do nothing."""
    ops.add_series(range(1, 1_501))
    holding, release, results = threading.Event(), threading.Event(), []

    def progress(found: int) -> None:
        if found == ops.PAGE:
            holding.set()
            release.wait(60)

    runner = threading.Thread(target=lambda: results.append(ops.run_here("series.import-missing-data",
                                                                           progress=progress)))
    runner.start()
    try:
        assert holding.wait(30)
        by_hand = run("series", "import-missing-data")
        assert by_hand.returncode == 1 and by_hand.stdout == ""
        assert by_hand.stderr.strip().startswith("fleet: series.import-missing-data is already running (")
        as_job = ops.import_missing_series_data.send()
        drain(broker, "sweeps")
        assert json.loads(finished_row(as_job.message_id).message)["not_run"].startswith(
            "series.import-missing-data is already running")
        # the other sweeps are not held by this one
        assert "Found 0 episodes" in run("episodes", "import-missing-data").stdout
    finally:
        release.set()
        runner.join(60)
    assert results == [{"found": 1500, "enqueued": 1500, "already_queued": 0, "include_failed": False}]
    assert broker.client.hlen("fleet:data.msgs") == 1_500
    assert ops.running_sweep("series.import-missing-data") is None


def test_new_episodes_of_a_series_record_are_imported_by_the_next_episode_sweep(db, broker, worker, series_api):
    series = Series.create(tvdb_id=81189)
    known = [Episode.create(series=series, tvdb_id=81189 * 100 + k, name=f"known {k}", data={"id": k},
                            data_last_updated_at=utcnow()) for k in (1, 2)]
    total = episode_count(81189)
    message = ops.series_data.send(series.id)
    drain(broker)
    assert f"{total} episode(s) listed, {total - 2} new" in finished_row(message.message_id).message
    assert Episode.select().where(Episode.data_last_updated_at.is_null()).count() == total - 2
    assert all(Episode.get_by_id(e.id).data == {"id": e.tvdb_id % 100} for e in known)  # kept, not re-imported

    result = run("episodes", "import-missing-data")
    assert result.stdout.strip() == (f"Found {total - 2} episodes without data; dispatched {total - 2} data job(s), "
                                     "0 already queued.")
    drain(broker)
    assert Episode.select().where(Episode.data_last_updated_at.is_null()).count() == 0


def test_a_redelivered_data_job_writes_the_same_rows_once(db, broker, worker, series_api):
    series = Series.create(tvdb_id=4242)
    message = ops.series_data.message(series.id)
    broker.enqueue(message)
    drain(broker)
    first = (Series.get_by_id(series.id).data, sorted(Episode.select(Episode.id, Episode.tvdb_id).tuples()))
    broker.enqueue(message)  # the same message again, as after a worker died before its ack
    drain(broker)
    assert (Series.get_by_id(series.id).data, sorted(Episode.select(Episode.id, Episode.tvdb_id).tuples())) == first
    assert Series.select().count() == 1
    wait_for(lambda: [r.status for r in joblog_rows(message.message_id)] == ["success", "success"], timeout=10,
             message="two successful attempts")


def test_sync_one_series_now(db, broker, series_api):
    row = Series.create(tvdb_id=81189)
    first = run("series", "sync", "81189")
    assert first.stdout.strip() == f"Dispatched a data job for Series #{row.id} (TVDB 81189)."
    again = run("series", "sync", "81189")
    assert again.stdout.strip() == f"A data job for Series #{row.id} (TVDB 81189) is already queued or running."
    assert broker.client.hlen("fleet:data.msgs") == 1


# -- the CLI's input ---------------------------------------------------------------------------

@pytest.mark.parametrize("args,message", [
    (["series", "check-data-updates", "--hours", "abc"], "'abc' is not a valid float"),
    (["series", "check-data-updates", "--hours", "-1"], "-1.0 is not in the range 0<=x<=8784"),
    (["episodes", "check-data-updates", "--hours", "nan"], "'nan' is not a number"),
    (["episodes", "check-data-updates", "--hours", "inf"], "inf is not in the range"),
    (["series", "status", "--hours", "soon"], "'soon' is not a valid float"),
    (["series", "sync", "abc"], "'abc' is not a valid integer"),
    (["series", "add", "0"], "0 is not in the range 1<=x<="),
    (["series", "sync", str(2**63)], "is not in the range 1<=x<="),
])
def test_bad_input_is_a_usage_error(args, message):
    """Parsed as the command line of a process (tests.helpers.usage_error), nothing run."""
    assert message in (usage_error(*args) or "parsed")


@pytest.mark.parametrize("args,message", [
    (["series", "add"], "give TVDB ids or --from-file"),
    (["series", "add", "1", "2", "--name", "Two"], "--name goes with exactly one TVDB id"),
])
def test_ids_and_a_name_that_do_not_go_together_are_a_usage_error(db, args, message):
    result = run(*args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("args,error", [
    (["series", "sync", "424242"], "fleet: no series with TVDB id 424242"),
    (["episodes", "sync", "5"], "fleet: no episode with TVDB id 5"),
])
def test_an_unknown_id_is_a_clear_error(db, broker, args, error):
    result = run(*args)
    assert result.returncode == 1 and result.stderr.strip() == error


def test_add_series_by_id_and_from_a_file(db, tmp_path):
    named = run("series", "add", "79126", "--name", "The Wire")
    assert named.stdout.startswith("Added 1 series (0 already known)")
    assert Series.get(Series.tvdb_id == 79126).name == "The Wire"

    listing = tmp_path / "ids.txt"
    listing.write_text("\n".join(str(i) for i in range(79_000, 80_200)) + "\n\n")  # 79126 is among them
    added = run("series", "add", "--from-file", str(listing))
    assert added.stdout.startswith("Added 1199 series (1 already known)")
    assert Series.select().count() == 1_200

    bad = tmp_path / "bad.txt"
    bad.write_text("90001\n90002\nnot-an-id\n")
    result = run("series", "add", "--from-file", str(bad))
    assert result.returncode == 2 and "bad.txt, line 3: 'not-an-id' is not a TVDB id" in result.stderr
    assert not Series.select().where(Series.tvdb_id >= 90_000).exists()  # a bad file adds nothing


# -- statistics -------------------------------------------------------------------------------------

def test_jobs_stats_give_successes_today_and_the_average_duration(db):
    now = utcnow()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    rows = [("series_data", "success", 1.0, now), ("series_data", "success", 3.0, now),
            ("series_data", "failed", 9.0, now), ("series_data", "success", 5.0, midnight - timedelta(hours=1)),
            ("episode_data", "success", 0.5, now)]
    for n, (job_class, status, seconds, created) in enumerate(rows):
        JobLog.create(run_id=str(n), job_class=job_class, message_id=f"m{n}", queue="data", status=status,
                      duration_seconds=seconds, created_at=created)
    stats = {r["job_class"]: r for r in json.loads(run("jobs", "stats", "--json", "--hours", "48").stdout)}
    assert stats["series_data"]["success_today"] == 2
    assert stats["series_data"]["avg_success_seconds"] == pytest.approx(3.0)  # of the successes in the window
    assert stats["series_data"]["counts"] == {"success": 3, "failed": 1}
    assert stats["episode_data"]["success_today"] == 1
    table = run("jobs", "stats").stdout
    assert "success today (UTC)" in table and "series_data" in table


# -- the simulator the demo and these tests use ----------------------------------------------------

def test_the_simulator_answers_404_for_a_fixed_share_of_ids_and_counts_requests_a_second(broker, series_api):
    import requests

    from core.clients.series_client import SeriesClient
    from core.settings import get_settings
    from core.simulators.series_sim import missing_by_ratio

    missing = [i for i in range(1, 1_001) if missing_by_ratio(i, 0.05)]
    assert 25 <= len(missing) <= 75  # about 5 %, the same ids every time
    series_api.control(missing_ratio=0.05)
    client = SeriesClient(get_settings())
    with pytest.raises(requests.HTTPError) as refused:
        client.get_series(missing[0])
    assert refused.value.response.status_code == 404
    present = next(i for i in range(1, 1_001) if i not in missing)
    assert client.get_series(present)["id"] == present
    stats = series_api.stats()
    assert stats["requests"] == 2 and sum(stats["per_second"].values()) == 2 and stats["max_per_second"] in (1, 2)
    assert series_api.config()["missing_ratio"] == 0.05
    with pytest.raises(ValueError, match="missing_ratio must be a number between 0 and 1"):
        series_api.control(missing_ratio=2)
    assert series_api.reset()["stats"]["per_second"] == {} and series_api.config()["missing_ratio"] == 0


def test_a_run_that_lost_its_lock_in_a_stall_stops(db, broker, series_api):
    from core.state import state_redis

    ops.add_series(range(1, 2_501))

    def progress(found: int) -> None:
        if found == ops.PAGE:  # as if the run stalled past the lock's time to live
            state_redis().delete("fleet:sweep:series.import-missing-data")

    with pytest.raises(ops.SweepStalled, match="stalled longer than 60 s and lost its lock"):
        ops.import_missing(ops.SERIES, progress=progress)
    assert broker.client.hlen("fleet:data.msgs") == 2 * ops.PAGE  # what it sent before it noticed stays queued


def test_the_three_stages_on_postgresql(postgres_url, broker, series_api):
    """The same SQL on PostgreSQL: partial indexes, the episode upsert, keyset pages on (age, id)."""
    from db.database import database, open_database
    from db.migrate import migrate

    pg = open_database(postgres_url)
    migrate(pg)
    previous = database.obj
    database.initialize(pg)
    worker = InProcessWorker(broker, worker_threads=4, worker_timeout=100)
    worker.start()
    try:
        with database.connection_context():
            ops.add_series([81189, 2**40])  # TVDB ids are 64-bit here
            series_api.control(missing=[2**40])
            assert ops.import_missing(ops.SERIES)["enqueued"] == 2
            drain(broker)
            assert Series.get(Series.tvdb_id == 2**40).error_code == "ERR_NOT_FOUND"
            episodes = episode_count(81189)
            assert ops.import_missing(ops.EPISODES)["enqueued"] == episodes
            drain(broker)
            ops.dispatch(ops.SERIES, Series.get(Series.tvdb_id == 81189).id)  # the record again: no new episode
            drain(broker)
            assert Episode.select().count() == episodes
            assert Episode.select().where(Episode.data_last_updated_at.is_null()).count() == 0
            Episode.update(data_last_updated_at=utcnow() - timedelta(hours=50)).where(Episode.number == 1).execute()
            stale = Episode.select().where(Episode.number == 1).count()
            assert ops.check_updates(ops.EPISODES, 48) == {"found": stale, "enqueued": stale, "already_queued": 0,
                                                           "hours": 48}
            drain(broker)
            assert ops.status_counts(ops.EPISODES, 48)["older"] == 0
            assert ops.import_missing(ops.SERIES) == {"found": 0, "enqueued": 0, "already_queued": 0,
                                                      "include_failed": False}
    finally:
        worker.stop()
        database.initialize(previous)
