"""Idle latency: how soon a message sent to an idle worker starts, Fleet vs bare Dramatiq.

    python benchmarks/latency.py                      # -p 2 -t 8, 5 s idle, 50 probes 200 ms apart
    python benchmarks/latency.py --probes 20 --idle 2 # a quick check

For each side (bare Dramatiq, then Fleet) it starts its own `redis-server` (no persistence)
and the real worker, `python -m dramatiq bench_actors -p P -t T`, waits until every worker
process has polled the queue, leaves it idle for `--idle` seconds while measuring the CPU
time of the worker's whole process tree, then sends `--probes` messages `--gap` seconds apart
from another process, each through the side's own send. The probe actor records how long
after its sending it started. Reported: p50, p95 and max of those delays, and the idle CPU
(CPU seconds of the worker tree per wall second, in % of one core).
Targets for Fleet: p95 <= 50 ms, max <= 100 ms, idle CPU at most 2 points above bare.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
sys.path.insert(0, str(REPO_DIR))

from benchmarks.bench_actors import LATENCY_KEY, NAMESPACES, QUEUE  # noqa: E402
from benchmarks.throughput import BenchmarkError, private_redis, side_env, stop_worker  # noqa: E402

TARGET_P95_MS, TARGET_MAX_MS, TARGET_CPU_POINTS = 50, 100, 2
LABELS = {"bare": "bare Dramatiq", "fleet": "Fleet"}


def tree_cpu_seconds(pid: int) -> float:
    processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def measure(side: str, args, workdir: Path) -> dict:
    (workdir / side).mkdir()
    with private_redis(workdir / side) as (redis_url, client):
        database_url = f"sqlite:///{workdir}/{side}-joblog.db"
        if side == "fleet":
            from db.database import open_database
            from db.migrate import migrate

            db = open_database(database_url)
            migrate(db)
            db.close_all()
        env = side_env(side, redis_url, workdir / side, database_url if side == "fleet" else None)
        log = open(workdir / f"worker-{side}.log", "wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "dramatiq", "bench_actors", "-p", str(args.processes), "-t", str(args.threads),
             "--path", str(BENCH_DIR)], env=env, cwd=REPO_DIR, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while client.zcard(f"{NAMESPACES[side]}:__heartbeats__") < args.processes:
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise BenchmarkError(f"{LABELS[side]}: the worker did not start (see {log.name})")
                time.sleep(0.05)
            time.sleep(1)  # let the boot settle before measuring idle
            cpu_before, wall_before = tree_cpu_seconds(worker.pid), time.monotonic()
            time.sleep(args.idle)
            idle_cpu = (tree_cpu_seconds(worker.pid) - cpu_before) / (time.monotonic() - wall_before) * 100
            subprocess.run([sys.executable, str(BENCH_DIR / "bench_actors.py"), "probe", str(args.probes), str(args.gap)],
                           env=env, cwd=REPO_DIR, check=True, stdout=subprocess.DEVNULL)
            deadline = time.monotonic() + 30
            while client.llen(LATENCY_KEY) < args.probes:
                if time.monotonic() > deadline:
                    raise BenchmarkError(f"{LABELS[side]}: only {client.llen(LATENCY_KEY)} of {args.probes} probes ran")
                time.sleep(0.05)
            delays = sorted(float(v) * 1000 for v in client.lrange(LATENCY_KEY, 0, -1))
            assert client.llen(f"{NAMESPACES[side]}:{QUEUE}") == 0
        finally:
            stop_worker(worker)
    return {"p50": statistics.median(delays), "p95": delays[int(round(0.95 * (len(delays) - 1)))],
            "max": delays[-1], "idle_cpu": idle_cpu}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", "-p", type=int, default=2)
    parser.add_argument("--threads", "-t", type=int, default=8)
    parser.add_argument("--idle", type=float, default=5.0, help="seconds idle before the first probe (default 5)")
    parser.add_argument("--probes", type=int, default=50, help="messages sent (default 50)")
    parser.add_argument("--gap", type=float, default=0.2, help="seconds between two probes (default 0.2)")
    args = parser.parse_args(argv)
    print(f"Idle latency: `python -m dramatiq bench_actors -p {args.processes} -t {args.threads}`, {args.idle:g} s idle, "
          f"then {args.probes} messages {args.gap * 1000:.0f} ms apart; {os.cpu_count()} CPUs")
    results = {}
    with tempfile.TemporaryDirectory(prefix="fleet-latency-") as tmp:
        try:
            for side in ("bare", "fleet"):
                results[side] = measure(side, args, Path(tmp))
        except BenchmarkError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
    print(f"{'side':<14} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7} {'idle CPU %':>10}")
    for side, r in results.items():
        print(f"{LABELS[side]:<14} {r['p50']:>7.1f} {r['p95']:>7.1f} {r['max']:>7.1f} {r['idle_cpu']:>10.2f}")
    fleet, bare = results["fleet"], results["bare"]
    extra_cpu = fleet["idle_cpu"] - bare["idle_cpu"]
    print(f"Fleet: p95 {'met' if fleet['p95'] <= TARGET_P95_MS else 'missed'} (<= {TARGET_P95_MS} ms), "
          f"max {'met' if fleet['max'] <= TARGET_MAX_MS else 'missed'} (<= {TARGET_MAX_MS} ms), "
          f"idle CPU {extra_cpu:+.2f} points vs bare {'met' if extra_cpu <= TARGET_CPU_POINTS else 'missed'} "
          f"(<= +{TARGET_CPU_POINTS})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
