"""The hourly counts the panel reads (db.job_log_hours, kept by triggers on job_log) always equal
a count of job_log itself: after inserts, updates and deletes, from concurrent writers, before
and after a fold, for a database that had rows before the counts existed."""
from __future__ import annotations

import random
import threading
from datetime import datetime, timedelta

import pytest
from peewee import SQL, fn

from db import migrate as migrations
from db.database import database, open_database
from db.job_log_hours import fold, totals
from db.models.jobs import JobLog, JobLogHourDelta

NOW = datetime(2026, 12, 7, 15, 40, 12, 500_000)
CLASSES = ("generate_user_workout_plan", "fetch_series_data", "translate_file")
OUTCOMES = (("success", None), ("failed", "ERR_AUTH"), ("retrying", "ERR_RATE_LIMIT"), ("started", None),
            ("deferred", "ERR_CIRCUIT_OPEN"))
BY = ("job_class", "status", "error_code")


def _row(rng: random.Random, n: int) -> dict:
    status, code = rng.choice(OUTCOMES)
    return {"run_id": f"run-{n}", "job_class": rng.choice(CLASSES), "message_id": f"msg-{n}", "queue": "q",
            "status": status, "error_code": code, "created_at": NOW - timedelta(minutes=rng.uniform(0, 300)),
            "duration_seconds": None if status == "started" else round(rng.uniform(0.1, 3), 3)}


def _counted(since: datetime, by=BY) -> dict[tuple, tuple[int, int, float]]:
    """What the hourly counts must say: job_log itself, counted."""
    columns = [getattr(JobLog, c) for c in by]
    rows = (JobLog.select(*columns, fn.COUNT(SQL("*")), fn.COUNT(JobLog.duration_seconds),
                          fn.SUM(JobLog.duration_seconds))
            .where(JobLog.created_at >= since).group_by(*columns).tuples())
    return {tuple(key): (n, timed, pytest.approx(seconds or 0, rel=1e-5)) for *key, n, timed, seconds in rows}


def _read(since: datetime, by=BY) -> dict[tuple, tuple[int, int, float]]:
    return {key: (t.attempts, t.timed, t.seconds) for key, t in totals(since, by).items()}


def _assert_equal() -> None:
    for since in (NOW - timedelta(hours=6), NOW - timedelta(minutes=150), NOW.replace(minute=0) - timedelta(hours=2)):
        assert _read(since) == _counted(since), since
        codes = {"ERR_AUTH", "ERR_NOT_FOUND"}
        attempts = {key: t.attempts for key, t in totals(since, ("error_code",), codes=codes, durations=False).items()}
        assert attempts == {key: n for key, (n, _, _) in _counted(since, ("error_code",)).items() if key[0] in codes}
    whole_hours = NOW.replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    by_hour = {(hour, status): n for (hour, status), (n, _, _) in _read(whole_hours, ("hour", "status")).items()}
    assert sum(by_hour.values()) == JobLog.select().where(JobLog.created_at >= whole_hours).count()


@pytest.fixture(params=["sqlite", "postgresql"])
def bound(request, tmp_path):
    """A fresh database of each kind, migrated, bound to the models."""
    url = f"sqlite:///{tmp_path}/hours.db" if request.param == "sqlite" else request.getfixturevalue("own_postgres_url")
    db = open_database(url)
    migrations.migrate(db)
    previous = database.obj
    database.initialize(db)
    try:
        with database.connection_context():
            yield request.param
    finally:
        database.initialize(previous)
        db.close_all() if hasattr(db, "close_all") else db.close()


def test_the_counts_follow_inserts_updates_and_deletes(bound):
    rng = random.Random(7)
    JobLog.insert_many([_row(rng, n) for n in range(400)]).execute()
    _assert_equal()

    started = [r.id for r in JobLog.select(JobLog.id).where(JobLog.status == "started")]
    JobLog.update(status="success", duration_seconds=1.5).where(JobLog.id.in_(started[::2])).execute()
    JobLog.update(status="failed", error_code="ERR_NOT_FOUND").where(JobLog.id.in_(started[1::2])).execute()
    ids = [r.id for r in JobLog.select(JobLog.id)]
    JobLog.update(created_at=NOW - timedelta(hours=5)).where(JobLog.id.in_(ids[::7])).execute()  # another hour
    JobLog.update(message="seen").where(JobLog.id.in_(ids[::3])).execute()  # nothing counted changes
    JobLog.delete().where(JobLog.id.in_(ids[::5])).execute()
    _assert_equal()

    pending = JobLogHourDelta.select().count() if bound == "postgresql" else 0
    assert fold() > 0 if pending else fold() == 0
    if bound == "postgresql":
        assert pending and JobLogHourDelta.select().count() == 0
    _assert_equal()
    assert fold() == 0  # nothing pending

    JobLog.delete().execute()
    fold()
    assert totals(NOW - timedelta(days=1), BY) == {}


def test_a_truncated_job_log_counts_nothing(own_postgres_url):
    db = open_database(own_postgres_url)
    migrations.migrate(db)
    with JobLog.bind_ctx(db), db.connection_context():
        JobLog.insert_many([_row(random.Random(1), n) for n in range(20)]).execute()
        db.execute_sql("TRUNCATE job_log")
        assert db.execute_sql("SELECT count(*) FROM job_log_hours").fetchone()[0] == 0
        assert db.execute_sql("SELECT count(*) FROM job_log_hour_deltas").fetchone()[0] == 0
    db.close_all()


def test_concurrent_writers_and_folds_neither_wait_on_each_other_nor_miscount(own_postgres_url):
    """Eight threads write as JobLog writers do (a transaction inserting rows and updating earlier
    ones, in random order) while two fold: no deadlock, no lost count."""
    db = open_database(own_postgres_url, max_connections=12)
    migrations.migrate(db)
    previous = database.obj
    database.initialize(db)
    errors: list[BaseException] = []
    writing = threading.Event()

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        mine: list[int] = []
        try:
            for n in range(40):
                with database.atomic():
                    rows = [_row(rng, seed * 10_000 + n * 10 + i) for i in range(4)]
                    mine += [r[0] for r in JobLog.insert_many(rows).returning(JobLog.id).tuples()]
                    for row_id in rng.sample(mine, min(3, len(mine))):
                        status, code = rng.choice(OUTCOMES)
                        JobLog.update(status=status, error_code=code).where(JobLog.id == row_id).execute()
                database.close()
        except BaseException as exc:  # noqa: BLE001 (reported by the test)
            errors.append(exc)

    def folder() -> None:
        try:
            while writing.is_set():
                fold()
                database.close()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    try:
        writing.set()
        writers = [threading.Thread(target=writer, args=(seed,)) for seed in range(1, 9)]
        folders = [threading.Thread(target=folder) for _ in range(2)]
        for thread in writers + folders:
            thread.start()
        for thread in writers:
            thread.join(120)
        writing.clear()
        for thread in folders:
            thread.join(30)
        assert errors == []
        with database.connection_context():
            assert JobLog.select().count() == 8 * 40 * 4
            _assert_equal()
            fold()
            _assert_equal()
    finally:
        database.initialize(previous)
        db.close_all()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_job_log_older_than_the_counts_is_counted_when_they_are_made(kind, tmp_path, request):
    url = f"sqlite:///{tmp_path}/old.db" if kind == "sqlite" else request.getfixturevalue("own_postgres_url")
    db = open_database(url)
    if kind == "postgresql":  # own_postgres_url comes migrated: start again before the counts
        for table in db.get_tables():
            db.execute_sql(f'DROP TABLE "{table}" CASCADE')
    migrations.migrate(db, until="0014_controls")
    previous = database.obj
    database.initialize(db)
    try:
        with database.connection_context():
            JobLog.insert_many([_row(random.Random(3), n) for n in range(300)]).execute()
            assert migrations.migrate(db) == ["0015_job_log_hours"]
            _assert_equal()
    finally:
        database.initialize(previous)
        db.close_all() if hasattr(db, "close_all") else db.close()


def test_windows_over_an_hour_start_at_a_whole_hour_as_the_dashboard_does():
    from db.job_log_hours import window_start

    assert window_start(timedelta(hours=1), NOW) == NOW - timedelta(hours=1)
    assert window_start(timedelta(minutes=15), NOW) == NOW - timedelta(minutes=15)
    assert window_start(timedelta(hours=24), NOW) == datetime(2026, 12, 6, 16)  # 15:40 now: 16:00 yesterday
    assert window_start(timedelta(days=7), NOW) == datetime(2026, 11, 30, 16)
    on_the_hour = datetime(2026, 12, 7, 15)
    assert window_start(timedelta(hours=24), on_the_hour) == datetime(2026, 12, 6, 16)  # the current hour is one
