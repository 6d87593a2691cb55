"""How long `fleet workouts retry-failed` takes on a big backlog, and how much memory it needs.

    python benchmarks/retry_failed.py [--plans 20000] [--days 5] [--skip-postgres]

Seeds 100,000 failed days in 20,000 plans (5 a plan) into SQLite and into PostgreSQL
(FLEET_BENCH_POSTGRES_URL, default postgresql://postgres@127.0.0.1:5432/postgres; a
scratch database is created and dropped), then runs the real CLI as a user would:
`retry-failed --reset` (prints a line a day) and `retry-failed --yes` (a job a plan,
sent through a private redis-server). Reports wall time and the peak RSS of the CLI
process. Target: each under 30 s, with bounded memory.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis  # noqa: E402

from db.database import open_database  # noqa: E402
from db.migrate import migrate  # noqa: E402
from db.models import utcnow  # noqa: E402
from db.models.workouts import Plan, User, WorkoutPlan  # noqa: E402
from tests.servers import DEFAULT_POSTGRES_URL, RedisServer, scratch_postgres  # noqa: E402

CHUNK = 5_000


def seed(db, plans: int, days: int) -> None:
    now = utcnow()
    with User.bind_ctx(db), Plan.bind_ctx(db), WorkoutPlan.bind_ctx(db):
        users = max(1, plans // 10)
        with db.atomic():
            for i in range(0, users, CHUNK):
                User.insert_many([{"email": f"u{n}@bench.io", "created_at": now} for n in range(i, min(users, i + CHUNK))]).execute()
            for i in range(0, plans, CHUNK):
                Plan.insert_many([{"user": 1 + n % users, "goal": "bench", "days": days, "created_at": now}
                                  for n in range(i, min(plans, i + CHUNK))]).execute()
            rows = ({"plan": 1 + n // days, "day": 1 + n % days, "status": "failed", "error_code": "ERR_API_TIMEOUT",
                     "error_message": "OpenAI did not answer in time", "created_at": now, "updated_at": now}
                    for n in range(plans * days))
            batch = []
            for row in rows:
                batch.append(row)
                if len(batch) == CHUNK:
                    WorkoutPlan.insert_many(batch).execute()
                    batch = []
            if batch:
                WorkoutPlan.insert_many(batch).execute()


def run_cli(env: dict, *args: str) -> tuple[float, int, int]:
    """(seconds, peak RSS in MiB, exit code) of one `fleet workouts …` run, output to a file."""
    with tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "fleet", "workouts", *args], env=env, stdout=out,
                                stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
    return elapsed, usage.ru_maxrss // 1024, os.waitstatus_to_exitcode(status)


def bench(label: str, url: str, redis_url: str, var: Path, plans: int, days: int) -> list[tuple]:
    db = open_database(url)
    db.connect()
    migrate(db)
    started = time.perf_counter()
    seed(db, plans, days)
    print(f"[{label}] seeded {plans * days:,} failed days in {plans:,} plans in {time.perf_counter() - started:.1f} s")
    env = dict(os.environ, DATABASE_URL=url, BROKER_URL=redis_url, FLEET_VAR_DIR=str(var))
    results = []

    seconds, rss, code = run_cli(env, "retry-failed", "--reset")
    with WorkoutPlan.bind_ctx(db):
        ok = code == 0 and WorkoutPlan.select().where(WorkoutPlan.status == "pending").count() == plans * days
        WorkoutPlan.update(status="failed").execute()
    results.append((label, "retry-failed --reset", seconds, rss, ok))

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    seconds, rss, code = run_cli(env, "retry-failed", "--yes")
    ok = code == 0 and client.hlen("fleet:workouts.msgs") == plans
    results.append((label, "retry-failed --yes", seconds, rss, ok))
    client.flushdb()
    db.close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    server = RedisServer(work / "redis").start()
    redis_url = server.url
    results = []
    try:
        results += bench("sqlite", f"sqlite:///{work}/bench.db", redis_url, work / "var", args.plans, args.days)
        if not args.skip_postgres:
            with scratch_postgres(os.environ.get("FLEET_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL), "fleet_bench") as url:
                results += bench("postgresql", url, redis_url, work / "var", args.plans, args.days)
    finally:
        server.stop()

    print(f"\n{args.plans * args.days:,} failed days in {args.plans:,} plans")
    print(f"{'database':<11} {'command':<22} {'seconds':>8} {'peak RSS':>9}  {'result':<7} target < 30 s")
    for label, command, seconds, rss, ok in results:
        print(f"{label:<11} {command:<22} {seconds:>8.1f} {rss:>6} MiB  {'ok' if ok else 'WRONG':<7} "
              f"{'met' if seconds < 30 else 'missed'}")
    return 0 if all(r[4] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
