"""Filling a PostgreSQL database fast for the panel benchmark: JobLog rows (with their searchable
arguments) and failed plan days made by the server itself with generate_series, a million rows a
statement; the same mix of statuses and error codes as the SQLite seeding of panel_latency.py."""
from __future__ import annotations

import time

from db.job_log_hours import FOLD

STEP = 1_000_000

JOBLOG = """
INSERT INTO job_log (run_id, job_class, message_id, queue, status, attempt, error_code, message, traceback, args,
                     duration_seconds, trace_id, worker, created_at, finished_at)
SELECT 'run-' || n, (ARRAY['generate_user_workout_plan', 'fetch_series_data', 'fetch_episode_data',
                           'translate_file', 'ping'])[1 + n %% 5],
       'msg-' || n, 'workouts', status, 1 + (status = 'retrying')::int, code,
       CASE WHEN code IS NULL THEN NULL ELSE code || ': the API said no (#' || n || ')' END,
       CASE WHEN status = 'failed' THEN 'Traceback (most recent call last):' || chr(10) || '  ...' END,
       '{"args": [' || (n %% 5000) || ', ' || (n %% 100000) || '], "kwargs": {}}',
       0.05 + random() * 4, lpad(to_hex(n / 3), 16, '0'), 'bench:1', created,
       CASE WHEN status = 'started' THEN NULL ELSE created + interval '2 seconds' END
FROM (
  SELECT n, status, created,
         CASE status
           WHEN 'failed' THEN (ARRAY['ERR_AUTH', 'ERR_INVALID_RESPONSE', 'ERR_NOT_FOUND', 'ERR_INTERNAL'])[1 + n %% 4]
           WHEN 'retrying' THEN (ARRAY['ERR_API_TIMEOUT', 'ERR_RATE_LIMIT', 'ERR_API_UNAVAILABLE',
                                       'ERR_CONNECTION'])[1 + n %% 4]
           WHEN 'deferred' THEN 'ERR_CIRCUIT_OPEN'
         END AS code
  FROM (
    SELECT n, CASE WHEN r < 0.75 THEN 'success' WHEN r < 0.83 THEN 'failed' WHEN r < 0.93 THEN 'retrying'
                   WHEN r < 0.97 THEN 'deferred' ELSE 'started' END AS status,
           (now() AT TIME ZONE 'utc') - random() * interval '7 days' AS created
    FROM (SELECT n, random() AS r FROM generate_series(%(first)s, %(last)s) AS n) AS numbers
  ) AS picked
) AS rows
"""

# What the job-log search finds a job by: a plan id for the workout jobs, a TVDB id for the
# series and episode jobs (the second argument, 100,000 values), written with the row.
ARGUMENTS = """
INSERT INTO job_arguments (message_id, name, value, created_at)
SELECT message_id, CASE WHEN job_class = 'generate_user_workout_plan' THEN 'plan_id' ELSE 'tvdb_id' END,
       (args::json -> 'args' ->> 1), created_at
FROM job_log WHERE id BETWEEN %(first)s AND %(last)s AND job_class <> 'ping'
"""

PLANS = """
INSERT INTO app_user (email, created_at)
SELECT 'u' || n || '@bench.io', now() AT TIME ZONE 'utc' FROM generate_series(1, %(users)s) AS n;
INSERT INTO plan (user_id, goal, days, created_at)
SELECT 1 + n %% %(users)s, 'bench', %(days)s, now() AT TIME ZONE 'utc' FROM generate_series(0, %(plans)s - 1) AS n;
INSERT INTO workout_plan (plan_id, day, status, error_code, error_message, attempts, cost_usd, created_at, updated_at)
SELECT p, d, 'failed', code, code || ' while generating day ' || d, 1, 0.0, at, at
FROM (SELECT p, d,
             CASE WHEN p %% 2 = 1 THEN 'ERR_API_TIMEOUT'
                  ELSE (ARRAY['ERR_RATE_LIMIT', 'ERR_INVALID_RESPONSE', 'ERR_QUOTA_EXCEEDED', 'ERR_AUTH'])[1 + p %% 4]
             END AS code,
             (now() AT TIME ZONE 'utc') - random() * interval '3 days' AS at
      FROM generate_series(1, %(plans)s) AS p, generate_series(1, %(days)s) AS d) AS days;
"""


def job_count(conn) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT coalesce(max(id), 0) FROM job_log")
        return cur.fetchone()[0]


def fill_joblogs(conn, upto: int) -> float:
    """JobLog rows (and their arguments) until there are `upto`; seconds taken."""
    started = time.perf_counter()
    have = job_count(conn)
    while have < upto:
        last = min(upto, have + STEP)
        with conn.cursor() as cur:
            cur.execute(JOBLOG, {"first": have + 1, "last": last})
            cur.execute(ARGUMENTS, {"first": have + 1, "last": last})
        conn.commit()
        have = last
        print(f"  {have:,} JobLog rows ({time.perf_counter() - started:.0f} s)", flush=True)
    with conn.cursor() as cur:
        cur.execute(FOLD)  # the hourly counts' pending changes, as a worker's JobLog writer folds them
    conn.commit()
    vacuum(conn, "job_log", "job_arguments", "job_log_hours", "job_log_hour_deltas")
    return time.perf_counter() - started


def vacuum(conn, *tables: str) -> None:
    """VACUUM ANALYZE, as autovacuum would have by then: statistics, and the visibility map an
    index-only scan needs (a table just filled has none)."""
    conn.commit()
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for table in tables:
                cur.execute(f"VACUUM ANALYZE {table}")
    finally:
        conn.autocommit = False


def fill_plans(conn, plans: int, days: int) -> None:
    with conn.cursor() as cur:
        cur.execute(PLANS, {"users": max(1, plans // 10), "plans": plans, "days": days})
    conn.commit()
    vacuum(conn, "app_user", "plan", "workout_plan")
