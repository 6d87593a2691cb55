"""How fast the series sweeps enqueue on a big table, beside a plain `actor.send()` loop.

    python benchmarks/sweeps.py                          # 1,000,000 series, 100,000 stale, SQLite and PostgreSQL
    python benchmarks/sweeps.py --rows 50000 --skip-postgres     # a quick check

Per database (SQLite in a temporary directory; PostgreSQL in a scratch database created and
dropped on FLEET_BENCH_POSTGRES_URL, default postgresql://postgres@127.0.0.1:5432/postgres),
with a private redis-server on a free port:

1. seed N series rows without data, ANALYZE, print the query plans of both sweeps' page queries;
2. `fleet series import-missing-data` (the real CLI, output to a file): N data jobs enqueued;
   wall time and peak RSS of the CLI process; the Redis memory those N queued unique jobs take;
3. the same command again: nothing enqueued, every row already queued;
4. a plain loop over the same rows (keyset pages, one `series_data.send(id)` a row) into an
   emptied Redis: the baseline the sweep is compared with;
5. a tenth of the rows made stale (48 h old, spread over the table), the others fresh (1 h),
   Redis emptied: `fleet series check-data-updates --hours 24`, and the plain loop over the
   same stale rows.

Each CLI run is timed from process start to exit ("seconds", what the targets are about) and
by its own JobLog row ("sweep", the run without the interpreter's start-up), which is what the
plain loop (timed the same way, inside its process) is compared with.

Targets: import ≤ 60 s with peak RSS ≤ 200 MB; the second run ≤ 30 s; check-data-updates ≤ 15 s.
Exit status 1 when a run enqueues a wrong number of jobs, 0 otherwise (targets only reported).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis  # noqa: E402

from db.database import open_database  # noqa: E402
from db.migrate import migrate  # noqa: E402
from db.models import utcnow  # noqa: E402
from tests.servers import DEFAULT_POSTGRES_URL, RedisServer, scratch_postgres  # noqa: E402

SEED_CHUNK = 10_000
TARGETS = {"import-missing-data": 60, "import-missing-data again": 30, "check-data-updates --hours 24": 15}
RSS_TARGET = 200


def seed(db, rows: int) -> None:
    now = utcnow()
    cursor = db.cursor()
    with db.atomic():
        for start in range(0, rows, SEED_CHUNK):
            values = [(1_000_000 + n, now) for n in range(start, min(rows, start + SEED_CHUNK))]
            if db.param == "%s":
                from psycopg2.extras import execute_values

                execute_values(cursor, 'INSERT INTO "series" ("tvdb_id", "created_at") VALUES %s', values,
                               page_size=SEED_CHUNK)
            else:
                cursor.executemany('INSERT INTO "series" ("tvdb_id", "created_at") VALUES (?, ?)', values)
    db.execute_sql("ANALYZE")


def make_stale(db, every: int) -> int:
    """Every `every`-th row 48 to 49 h old, the others 1 to 2 h: the stale rows spread over the whole
    table, the times over an hour (as imports leave them)."""
    now = utcnow()
    rows = db.execute_sql('SELECT MAX("id") FROM "series"', ()).fetchone()[0] or 0
    moments = ((now - timedelta(hours=48 if i % every == 0 else 1, seconds=i % 3600), i) for i in range(1, rows + 1))
    cursor = db.cursor()
    with db.atomic():
        if db.param == "?":
            cursor.executemany('UPDATE "series" SET "data_last_updated_at" = ? WHERE "id" = ?', moments)
        else:
            from psycopg2.extras import execute_values

            execute_values(cursor, 'UPDATE "series" SET "data_last_updated_at" = v.at FROM (VALUES %s) AS v (at, id) '
                                   'WHERE "series"."id" = v.id', moments, page_size=SEED_CHUNK)
    db.execute_sql("ANALYZE")
    return rows // every


def plan(db, sweep: str, rows: int) -> str:
    """The query plan of a page of the sweep from the middle of the table, as the database runs it."""
    from actors.series import missing_page, stale_page
    from db.models.series import Series

    cutoff = utcnow() - timedelta(hours=24)
    with Series.bind_ctx(db):
        query = (missing_page(Series, after=rows // 2) if sweep == "import-missing-data"
                 else stale_page(Series, cutoff, after=(cutoff - timedelta(days=1), rows // 2)))
        sql, params = query.sql()
        prefix = "EXPLAIN QUERY PLAN " if db.param == "?" else "EXPLAIN "
        lines = [" | ".join(str(c) for c in row) for row in db.execute_sql(prefix + sql, params).fetchall()]
    return f"plan of a {sweep} page: {sql}\n    " + "\n    ".join(lines)


def run_cli(env: dict, *args: str) -> tuple[float, int, str]:
    """(seconds, peak RSS in MiB, stdout) of one `fleet …` run."""
    with tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "fleet", *args], env=env, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
        out.seek(0)
        text = out.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"fleet {' '.join(args)} failed: {text}")
    return elapsed, usage.ru_maxrss // 1024, text.strip()


def run_baseline(env: dict, kind: str) -> tuple[float, int]:
    """(seconds, messages) of the plain send loop, in a process of its own (as the CLI runs)."""
    out = subprocess.run([sys.executable, __file__, "--baseline", kind], env=env, capture_output=True, text=True,
                         check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["seconds"], result["sent"]


def baseline(kind: str) -> None:
    """A plain loop: the same keyset pages as the sweep, one `send` a row (a Redis round trip or two each)."""
    from actors import series
    from actors.runtime import boot
    from db.database import database
    from db.models.series import Series

    boot()
    database.connect()
    pages = series.missing_pages(Series) if kind == "import" else series.stale_pages(Series, 24)
    started = time.perf_counter()
    sent = sum(series.series_data.send(row_id) is not None for ids in pages for row_id in ids)
    print(json.dumps({"seconds": time.perf_counter() - started, "sent": sent}))


@dataclass
class Result:
    database: str
    command: str
    seconds: float  # the CLI process, start to exit: what an operator waits
    sweep_seconds: float  # the sweep itself, as its JobLog row says (no interpreter start-up)
    rss_mib: int
    ok: bool
    loop_seconds: float | None = None  # the plain send() loop over the same rows

    @property
    def met(self) -> bool:
        return self.seconds <= TARGETS[self.command] and self.rss_mib <= RSS_TARGET


def bench(label: str, db_url: str, redis_url: str, var: Path, rows: int) -> tuple[list[Result], dict]:
    from db.models.jobs import JobLog

    db = open_database(db_url)
    db.connect()
    migrate(db)
    started = time.perf_counter()
    seed(db, rows)
    print(f"[{label}] seeded {rows:,} series without data in {time.perf_counter() - started:.1f} s", flush=True)
    print(f"[{label}] {plan(db, 'import-missing-data', rows)}", flush=True)
    env = dict(os.environ, DATABASE_URL=db_url, BROKER_URL=redis_url, FLEET_VAR_DIR=str(var))
    for name in ("FLEET_STATE_REDIS_URL", "SERIES_API_RATE"):
        env.pop(name, None)
    client = redis.Redis.from_url(redis_url)
    memory = {}

    def sweep(command: str, found: int, enqueued: int, *args: str) -> Result:
        seconds, rss, line = run_cli(env, "series", *args)
        what = "with data older than 24 hour(s)" if "check" in command else "without data"
        expected = f"Found {found} series {what}; dispatched {enqueued} data job(s), {found - enqueued} already queued."
        with JobLog.bind_ctx(db):
            run = JobLog.select().where(JobLog.queue == "cli").order_by(JobLog.id.desc()).get()
        return Result(label, command, seconds, run.duration_seconds, rss,
                      line == expected and client.hlen("fleet:data.msgs") == found)

    client.flushdb()
    before = client.info("memory")["used_memory"]
    first = sweep("import-missing-data", rows, rows, "import-missing-data")
    memory["redis_bytes"] = client.info("memory")["used_memory"] - before
    memory["redis_keys"] = client.dbsize()
    again = sweep("import-missing-data again", rows, 0, "import-missing-data")
    client.flushdb()
    first.loop_seconds, sent = run_baseline(env, "import")
    first.ok &= sent == rows

    stale = make_stale(db, 10)
    print(f"[{label}] {plan(db, 'check-data-updates', rows)}", flush=True)
    print(f"[{label}] with every row imported, {plan(db, 'import-missing-data', rows)}", flush=True)
    client.flushdb()
    check = sweep("check-data-updates --hours 24", stale, stale, "check-data-updates", "--hours", "24")
    client.flushdb()
    check.loop_seconds, sent = run_baseline(env, "check")
    check.ok &= sent == stale
    client.flushdb()
    db.close()
    return [first, again, check], memory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--baseline", choices=("import", "check"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline:
        baseline(args.baseline)
        return 0

    work = Path(tempfile.mkdtemp(prefix="fleet-bench-sweeps-"))
    server = RedisServer(work / "redis").start()
    redis_url = server.url
    results, memory = [], {}
    try:
        found, memory["sqlite"] = bench("sqlite", f"sqlite:///{work}/bench.db", redis_url, work / "var", args.rows)
        results += found
        if not args.skip_postgres:
            with scratch_postgres(os.environ.get("FLEET_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL), "fleet_bench") as url:
                found, memory["postgresql"] = bench("postgresql", url, redis_url, work / "var", args.rows)
                results += found
    finally:
        server.stop()

    print(f"\n{args.rows:,} series rows; a private redis-server; the real CLI (seconds: the process; sweep: its "
          "own run, which the send() loop is compared with)")
    print(f"{'database':<11} {'command':<30} {'seconds':>8} {'sweep':>7} {'peak RSS':>9} {'send() loop':>12} "
          f"{'ratio':>6}  result")
    for r in results:
        loop = f"{r.loop_seconds:>10.1f} s" if r.loop_seconds is not None else f"{'–':>12}"
        ratio = f"{r.loop_seconds / r.sweep_seconds:>5.1f}×" if r.loop_seconds is not None else f"{'':>6}"
        print(f"{r.database:<11} {r.command:<30} {r.seconds:>8.1f} {r.sweep_seconds:>7.1f} {r.rss_mib:>5} MiB {loop} "
              f"{ratio}  {'ok' if r.ok else 'WRONG'}, target ≤ {TARGETS[r.command]} s and ≤ {RSS_TARGET} MiB: "
              f"{'met' if r.met else 'missed'}")
    for label, found in memory.items():
        print(f"Redis memory for {args.rows:,} queued unique data jobs ({label}): {found['redis_bytes'] / 2**20:,.0f} MiB "
              f"({found['redis_bytes'] / args.rows:,.0f} bytes a job; {found['redis_keys']:,} keys)")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
