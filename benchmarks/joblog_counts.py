"""What the hourly counts' triggers (migration 0015) cost the JobLog writer: the same flushes
with the triggers on and off, side by side, on PostgreSQL and on SQLite.

    python benchmarks/joblog_counts.py --postgres postgresql://postgres@127.0.0.1:5432/postgres \
        [--writers 8] [--flushes 200] [--rows 20] [--runs 3]

Each writer stands for a worker process's JobLog writer (a thread with its own connection): a
flush is one transaction that inserts `--rows` new attempts (`started`) and finishes the
previous flush's (`success` or `failed` with a duration: an UPDATE a row), through the writer's
own `_write`; every 10 s a writer folds the counts (db.job_log_hours.fold), as the real one does.
SQLite has one writer (one process writes at a time). Runs alternate on/off in fresh databases;
prints attempts finished a second, the median of each side, and the ratio on/off.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.servers import scratch_postgres  # noqa: E402

FOLD_EVERY = 10.0


def _flushes(writer: int, flushes: int, rows: int):
    """(new rows, rows finished) a flush: the attempts of flush n start, those of n-1 finish."""
    from db.models import utcnow

    previous: list[dict] = []
    for n in range(flushes + 1):
        now = utcnow()
        new = [] if n == flushes else [
            {"run_id": f"r{writer}-{n}-{i}", "job_class": ("generate_user_workout_plan", "fetch_series_data")[i % 2],
             "message_id": f"m{writer}-{n}-{i}", "queue": "workouts", "status": "started", "attempt": 1,
             "args": "[1, 2]", "trace_id": "t", "worker": f"bench:{writer}", "created_at": now, "error_code": None,
             "message": None, "traceback": None, "duration_seconds": None, "finished_at": None}
            for i in range(rows)]
        done = [dict(row, status="failed" if i % 10 == 0 else "success",
                     error_code="ERR_RATE_LIMIT" if i % 10 == 0 else None, duration_seconds=0.5, finished_at=now)
                for i, row in enumerate(previous)]
        yield new, done
        previous = new


def run(url: str, counted: bool, writers: int, flushes: int, rows: int) -> float:
    """Attempts finished a second with the triggers on or off."""
    from actors.middleware.joblog import JobLogWriter, _Entry
    from db.database import database, open_database
    from db.job_log_hours import fold
    from db.migrate import migrate

    db = open_database(url, max_connections=writers + 2)
    migrate(db)
    if not counted:
        db.execute_sql("ALTER TABLE job_log DISABLE TRIGGER USER" if url.startswith("postgres")
                       else "DROP TRIGGER job_log_hours_insert")
        if not url.startswith("postgres"):
            db.execute_sql("DROP TRIGGER job_log_hours_update")
    db.close()
    database.initialize(db)
    errors: list[BaseException] = []

    def write(writer: int) -> None:
        folded = time.monotonic()
        try:
            for new, done in _flushes(writer, flushes, rows):
                snapshot = [(None, _Entry(r), r, False) for r in new] + [(None, _Entry(r), r, True) for r in done]
                JobLogWriter._write(snapshot)
                if counted and time.monotonic() - folded > FOLD_EVERY:
                    fold()
                    folded = time.monotonic()
                database.close()
        except BaseException as exc:  # noqa: BLE001 (reported)
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    took = time.perf_counter() - started
    if errors:
        raise errors[0]
    if hasattr(db, "close_all"):
        db.close_all()
    return writers * flushes * rows / took


def compare(label: str, urls, writers: int, args) -> None:
    rates: dict[bool, list[float]] = {True: [], False: []}
    for n in range(args.runs):
        for counted in (False, True):
            with urls() as url:
                rate = run(url, counted, writers, args.flushes, args.rows)
            rates[counted].append(rate)
            print(f"  {label} run {n + 1}, counts {'on ' if counted else 'off'}: {rate:8,.0f} attempts/s", flush=True)
    on, off = statistics.median(rates[True]), statistics.median(rates[False])
    print(f"{label}: {writers} writer(s), {args.rows} attempts a flush: counts off {off:,.0f}/s, on {on:,.0f}/s, "
          f"ratio on/off {on / off:.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", help="a PostgreSQL server URL (a scratch database is made a run)")
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--flushes", type=int, default=200)
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    from contextlib import contextmanager

    @contextmanager
    def sqlite_url():
        with tempfile.TemporaryDirectory(prefix="fleet-counts-") as work:
            yield f"sqlite:///{work}/fleet.db"

    compare("SQLite", sqlite_url, 1, args)
    if args.postgres:
        compare("PostgreSQL", lambda: scratch_postgres(args.postgres, "fleet_counts"), args.writers, args)


if __name__ == "__main__":
    main()
