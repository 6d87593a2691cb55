"""How fast the operator panel answers on a big database, and how long a bulk retry takes.

    python benchmarks/panel_latency.py [--joblogs 1000000] [--plans 20000] [--days 5] [--requests 50]
    python benchmarks/panel_latency.py --postgres postgresql://postgres@127.0.0.1:5432/postgres \
        --joblogs 1000000,10000000 [--requests 20]

Seeds SQLite with 1,000,000 JobLog rows (the last 7 days, the usual mix of statuses and error
codes) and 100,000 failed plan days in 20,000 plans, half of the plans failed with
ERR_API_TIMEOUT. Then, through the real Flask app and a logged-in admin session:

- times the job-log list (unfiltered and filtered by error code), the error-codes page, the
  failed-plans list, the dashboard, /healthz and /metrics (the last three also with their
  few-second cache emptied before every request): --requests each after a warm-up, 95th
  percentile against a 200 ms target;
- presses "Retry all matching the filter" on the ERR_API_TIMEOUT plans (10,000 plans): a batch,
  one item a plan, worked by a real Dramatiq worker on the `panel` queue (8 threads; the
  generation jobs it sends stay queued), timed from the POST until the batch has finished,
  against 30 s.

With --postgres (a server URL; a scratch database is made on it and dropped), the rows are made by
PostgreSQL itself (benchmarks/pg_seed.py, generate_series) at each size of --joblogs in turn, and
every page of the panel and the job-log search (by a plan id, a TVDB id, a message id, a trace id)
is timed at each size against a p95 target of 100 ms; no bulk retry.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.servers import RedisServer  # noqa: E402

WORK = Path(tempfile.mkdtemp(prefix="fleet-panel-bench-"))
CHUNK = 10_000
SLOW_REQUESTS = 5
ACTORS = ["generate_user_workout_plan", "fetch_series_data", "fetch_episode_data", "translate_file", "ping"]
# (status, error codes it may carry, share)
MIX = [("success", [None], 0.75), ("failed", ["ERR_AUTH", "ERR_INVALID_RESPONSE", "ERR_NOT_FOUND", "ERR_INTERNAL"], 0.08),
       ("retrying", ["ERR_API_TIMEOUT", "ERR_RATE_LIMIT", "ERR_API_UNAVAILABLE", "ERR_CONNECTION"], 0.10),
       ("deferred", ["ERR_CIRCUIT_OPEN"], 0.04), ("started", [None], 0.03)]


def seed_joblogs(db, count: int) -> None:
    from db.models import utcnow

    rng = random.Random(3)
    now = utcnow()
    statuses = [(status, codes) for status, codes, _ in MIX]
    weights = [share for _, _, share in MIX]
    sql = ('INSERT INTO job_log (run_id, job_class, message_id, queue, status, attempt, error_code, message, '
           'traceback, args, duration_seconds, trace_id, worker, created_at, finished_at) '
           'VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)')
    rows = []
    for n in range(count):
        status, codes = rng.choices(statuses, weights)[0]
        code = rng.choice(codes)
        created = now - timedelta(seconds=rng.uniform(0, 7 * 86400))
        rows.append((f"run-{n}", rng.choice(ACTORS), f"msg-{n}", "workouts", status, 1 + (status == "retrying"),
                     code, f"{code}: the API said no (#{n})" if code else None,
                     "Traceback (most recent call last):\n  ..." if status == "failed" else None,
                     f"[{n % 5000}, {n}]", rng.uniform(0.05, 4.0), f"{n // 3:016x}", "bench:1",
                     str(created), None if status == "started" else str(created + timedelta(seconds=2))))
        if len(rows) == CHUNK:
            with db.atomic():
                db.connection().executemany(sql, rows)
            rows = []
    if rows:
        with db.atomic():
            db.connection().executemany(sql, rows)
    with db.atomic():  # what the search finds a job by: its first argument as a plan id
        db.connection().execute("INSERT INTO job_arguments (message_id, name, value, created_at) "
                                "SELECT message_id, 'plan_id', json_extract(args, '$[0]'), created_at FROM job_log")


def seed_plans(db, plans: int, days: int) -> None:
    from db.models import utcnow

    rng = random.Random(4)
    now = utcnow()
    users = max(1, plans // 10)
    conn = db.connection()
    with db.atomic():
        conn.executemany("INSERT INTO app_user (email, created_at) VALUES (?, ?)",
                         [(f"u{n}@bench.io", str(now)) for n in range(users)])
        conn.executemany("INSERT INTO plan (user_id, goal, days, created_at) VALUES (?, ?, ?, ?)",
                         [(1 + n % users, "bench", days, str(now)) for n in range(plans)])
        other = ["ERR_RATE_LIMIT", "ERR_INVALID_RESPONSE", "ERR_QUOTA_EXCEEDED", "ERR_AUTH"]
        rows = []
        for plan in range(1, plans + 1):
            code = "ERR_API_TIMEOUT" if plan % 2 else rng.choice(other)
            for day in range(1, days + 1):
                failed_at = str(now - timedelta(seconds=rng.uniform(0, 3 * 86400)))
                rows.append((plan, day, "failed", code, f"{code} while generating day {day}", 1, 0.0, failed_at, failed_at))
        conn.executemany("INSERT INTO workout_plan (plan_id, day, status, error_code, error_message, attempts, "
                         "cost_usd, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


def logged_in_client(app):
    from actors.accounts import create_account
    from core.errors import FleetError

    try:
        create_account("bench@fleet.local", "bench-password", "admin")
    except FleetError:
        pass  # a kept database (--keep) has it from an earlier run
    client = app.test_client()
    page = client.get("/admin/login").text
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    response = client.post("/admin/login", data={"email": "bench@fleet.local", "password": "bench-password",
                                                 "csrf_token": token})
    assert response.status_code == 302, response.status_code
    return client, token


SQL_MS: list[float] = []  # milliseconds in the database during the request being timed


def count_sql_time() -> None:
    """Add up the time each request spends in peewee's execute_sql (the database's share of a page)."""
    import peewee

    run = peewee.Database.execute_sql

    def timed(self, sql, params=None, *args, **kwargs):
        started = time.perf_counter()
        try:
            return run(self, sql, params, *args, **kwargs)
        finally:
            SQL_MS.append((time.perf_counter() - started) * 1000)

    peewee.Database.execute_sql = timed


def time_page(client, path: str, requests: int, uncached: bool = False, sql: list | None = None) -> list[float]:
    """Milliseconds a request; `uncached` empties the panel's few-second cache before each one,
    so the dashboard's grouped query, /healthz's checks and /metrics' reads run every time. A page
    whose first request takes over a second is timed SLOW_REQUESTS times only."""
    started = time.perf_counter()
    assert client.get(path).status_code == 200, path
    if time.perf_counter() - started > 1:
        requests = min(requests, SLOW_REQUESTS)
    else:
        for _ in range(2):
            assert client.get(path).status_code == 200, path
    times = []
    for _ in range(requests):
        if uncached:
            client.application.extensions.get("fleet_cache", {}).clear()
        SQL_MS.clear()
        started = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        if sql is not None:
            sql.append(sum(SQL_MS))
        assert response.status_code == 200, (path, response.status_code)
    return times


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[18]


def bulk_retry(client, token: str, expected_plans: int) -> tuple[float, dict, int]:
    """POST "retry all matching the filter", follow the redirect to its batch, and poll the
    batch's JSON until it has finished; (seconds, the batch as JSON, generation jobs queued)."""
    import dramatiq
    from dramatiq import Worker

    import actors.workouts_retry  # noqa: F401  (declares the bulk retry's batch kind before the worker starts)

    broker = dramatiq.get_broker()
    worker = Worker(broker, queues={"panel"}, worker_threads=8, worker_timeout=100)
    worker.start()
    try:
        started = time.perf_counter()
        response = client.post("/admin/failed-plans/retry-matching/?flt0_error_code_equals=ERR_API_TIMEOUT",
                               data={"csrf_token": token})
        found = re.fullmatch(r"/admin/batches/([0-9a-f-]{36})/", response.headers.get("Location", ""))
        assert response.status_code == 302 and found, (response.status_code, response.headers.get("Location"))
        while True:
            record = client.get(f"/api/batches/{found.group(1)}").json
            if record["finished"]:
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
    finally:
        worker.stop()
    assert record["total"] == expected_plans, "the batch does not hold every matching plan"
    # generation jobs waiting: on the queue, or delayed to their place in the OpenAI budget
    return elapsed, record, broker.client.hlen("fleet:workouts.msgs") + broker.client.hlen("fleet:workouts.DQ.msgs")


PG_TARGET_MS = 100


def every_page(size: int) -> list[tuple[str, str]]:
    """Every page of the panel, and the searches, on a database of `size` JobLog rows."""
    some = max(1, size // 2)
    return [("dashboard, uncached", "/admin/"),
            ("job logs", "/admin/jobs/"),
            ("job logs, page 50", "/admin/jobs/?page=49"),
            ("job logs, status failed", "/admin/jobs/?flt0_status_equals=failed"),
            ("job logs, error code", "/admin/jobs/?flt0_error_code_equals=ERR_RATE_LIMIT"),
            ("job logs, actor", "/admin/jobs/?flt0_job_class_equals=ping"),
            ("job logs of a plan", "/admin/jobs/?flt0_plan_equals=13"),  # a row's "jobs" link
            ("search plan_id=13", "/admin/jobs/?search=plan_id%3D13"),
            ("search tvdb_id=79126", "/admin/jobs/?search=tvdb_id%3D79126"),
            ("search message id", f"/admin/jobs/?search=msg-{some}"),
            ("search trace id", f"/admin/jobs/?search={some // 3:016x}"),
            ("job details", f"/admin/jobs/details/?id={some}"),
            ("job statistics", "/admin/job-stats/"),
            ("error codes", "/admin/error-codes/"),
            ("failed plans", "/admin/failed-plans/"),
            ("series", "/admin/series/"),
            ("episodes", "/admin/episodes/"),
            ("batches", "/admin/batches/"),
            ("dead letters", "/admin/dead-letters/"),
            ("schedule", "/admin/schedule/"),
            ("alerts", "/admin/alerts/"),
            ("health", "/admin/health/"),
            ("accounts", "/admin/accounts/"),
            ("audit log", "/admin/audit/"),
            ("/healthz, uncached", "/healthz"),
            ("/metrics, uncached", "/metrics")]


def postgres_run(args) -> int:
    """Every page at each size of --joblogs on a scratch PostgreSQL database."""
    import psycopg2

    from benchmarks.pg_seed import fill_joblogs, fill_plans, job_count
    from tests.servers import scratch_postgres

    sizes = [int(n) for n in str(args.joblogs).split(",")]
    redis_server = RedisServer(WORK / "redis").start()
    results: dict[int, list] = {}
    kept = contextlib.nullcontext(args.postgres) if args.keep else scratch_postgres(args.postgres, "fleet_bench")
    try:
        with kept as url:
            os.environ.update(DATABASE_URL=url, BROKER_URL=redis_server.url, FLEET_VAR_DIR=str(WORK / "var"),
                              FLEET_SECRET_KEY="bench-secret")
            import logging

            from actors.runtime import boot
            from admin.app import create_app
            from db.database import database
            from db.migrate import migrate

            settings = boot()
            logging.getLogger().setLevel(logging.WARNING)
            database.connect(reuse_if_open=True)
            migrate(database.obj)
            database.close()
            count_sql_time()
            conn = psycopg2.connect(url)
            if not args.keep or not job_count(conn):
                fill_plans(conn, args.plans, args.days)
            app = create_app(settings)
            client, _ = logged_in_client(app)
            for size in sizes:
                print(f"filling to {size:,} JobLog rows", flush=True)
                seconds = fill_joblogs(conn, size)
                print(f"filled in {seconds:.0f} s", flush=True)
                if args.fill_only:
                    continue
                client, _ = logged_in_client(app)  # again: a long fill outlives the session's idle timeout
                rows = []
                for label, path in every_page(size):
                    if client.get(path).status_code == 404:
                        continue  # a page this version has not got
                    sql: list[float] = []
                    times = time_page(client, path, args.requests, uncached="uncached" in label, sql=sql)
                    rows.append((label, statistics.median(times), p95(times), max(times), p95(sql)))
                    print(f"  {label:<28} p95 {rows[-1][2]:7.1f} ms, SQL p95 {rows[-1][4]:7.1f} ms", flush=True)
                results[size] = rows
            conn.close()
            database.close_all()
    finally:
        redis_server.stop()
        shutil.rmtree(WORK, ignore_errors=True)
    ok = True
    for size, rows in results.items():
        print(f"\n{size:,} JobLog rows on PostgreSQL, {args.requests} requests a page after a warm-up")
        print(f"{'page':<28} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7} {'SQL p95':>8}  target p95 <= {PG_TARGET_MS} ms")
        for label, p50, p95_ms, worst, sql_ms in rows:
            met = p95_ms <= PG_TARGET_MS
            ok &= met
            print(f"{label:<28} {p50:>7.1f} {p95_ms:>7.1f} {worst:>7.1f} {sql_ms:>8.1f}  {'met' if met else 'MISSED'}")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--joblogs", default="1000000", help="rows; with --postgres, sizes in turn: 1000000,10000000")
    parser.add_argument("--plans", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--postgres", help="a PostgreSQL server URL: run there (a scratch database), every page")
    parser.add_argument("--keep", action="store_true",
                        help="--postgres names a database to use and keep (filled up to each size; again next time)")
    parser.add_argument("--fill-only", action="store_true", help="with --postgres: fill, measure nothing")
    args = parser.parse_args()
    if args.postgres:
        return postgres_run(args)
    args.joblogs = int(args.joblogs)

    redis_server = RedisServer(WORK / "redis").start()
    redis_url = redis_server.url
    os.environ.update(DATABASE_URL=f"sqlite:///{WORK}/bench.db", BROKER_URL=redis_url, FLEET_VAR_DIR=str(WORK / "var"),
                      FLEET_SECRET_KEY="bench-secret")
    try:
        import logging

        from actors.runtime import boot
        from admin.app import create_app
        from db.database import database
        from db.migrate import migrate

        settings = boot()
        logging.getLogger().setLevel(logging.WARNING)
        database.connect(reuse_if_open=True)
        migrate(database.obj)
        started = time.perf_counter()
        seed_joblogs(database, args.joblogs)
        seed_plans(database, args.plans, args.days)
        database.close()
        print(f"seeded {args.joblogs:,} JobLog rows and {args.plans * args.days:,} failed days in {args.plans:,} plans "
              f"in {time.perf_counter() - started:.0f} s (SQLite)")

        app = create_app(settings)
        client, token = logged_in_client(app)
        pages = [("job logs", "/admin/jobs/"),
                 ("job logs, error code filter", "/admin/jobs/?flt0_error_code_equals=ERR_RATE_LIMIT"),
                 ("job logs of a plan", "/admin/jobs/?flt0_plan_equals=13"),  # a row's "jobs" link
                 ("job logs of a series", "/admin/jobs/?flt0_series_equals=13"),
                 ("dead letters", "/admin/dead-letters/"),
                 ("search plan_id=13", "/admin/jobs/?search=plan_id%3D13"),
                 ("search message id", f"/admin/jobs/?search=msg-{args.joblogs // 2}"),
                 ("search trace id", f"/admin/jobs/?search={args.joblogs // 6:016x}"),
                 ("error codes", "/admin/error-codes/"),
                 ("failed plans", "/admin/failed-plans/"),
                 ("dashboard (cached 5 s)", "/admin/"),
                 ("dashboard, uncached", "/admin/"),
                 ("/healthz, uncached", "/healthz"),
                 ("/metrics, uncached", "/metrics")]
        results = []
        for label, path in pages:
            times = time_page(client, path, args.requests, uncached="uncached" in label)
            results.append((label, statistics.median(times), p95(times), max(times)))

        expected = (args.plans + 1) // 2
        seconds, record, queued = bulk_retry(client, token, expected)
    finally:
        redis_server.stop()
        shutil.rmtree(WORK, ignore_errors=True)

    print(f"\npage latency, {args.requests} requests each after a warm-up (Flask test client, one thread)")
    print(f"{'page':<30} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7}  target p95 < 200 ms")
    ok = True
    for label, p50, p95_ms, worst in results:
        met = p95_ms < 200 or "no target" in label
        ok &= met
        print(f"{label:<30} {p50:>7.1f} {p95_ms:>7.1f} {worst:>7.1f}  {'met' if met else 'MISSED'}")
    right = record["status"] == "completed" and record["succeeded"] == expected and queued == expected
    ok &= right and seconds < 30
    print(f"\nretry all matching the filter (ERR_API_TIMEOUT), a batch of {record['total']:,} plans: "
          f"{record['succeeded']:,} done, {queued:,} generation jobs queued, in {seconds:.1f} s  "
          f"{'ok' if right else 'WRONG'}, target < 30 s {'met' if seconds < 30 else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
