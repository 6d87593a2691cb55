"""The price of the batch ledger: 100,000 no-op items as a batch vs as plain messages.

    python benchmarks/batches.py                           # 100,000 items, -p 2 -t 8, SQLite
    python benchmarks/batches.py --items 5000              # a quick check
    python benchmarks/batches.py --database-url postgresql://postgres@127.0.0.1/fleet_bench

What it does, with its own `redis-server` on a free port and a fresh, migrated database:

1. plain: sends N messages of a no-op Fleet actor (`send_many`), then starts the real worker
   (`python -m dramatiq batch_bench_actors -p P -t T`) and times the drain;
2. batch: times `create_batch` of N no-op items (the rows, the chunk counters, every chunk job
   sent; target ≤ 10 s), then starts the same worker and times the drain until the batch has
   finished; meanwhile a thread requests the batch's page and `/api/batches/<id>` as a
   logged-in admin (Flask test client) and reports their p50/p95 (target p95 ≤ 100 ms).

Drain rates count from the moment every worker process fetches until the last message is
acked (plain) or the batch's finish (batch), like benchmarks/throughput.py; worker boot is
excluded. Target: batch rate ≥ 0.7 × plain rate. Exit status 1 if a check of the outcome
fails (not every item succeeded exactly once), 0 otherwise; targets are only reported.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
sys.path.insert(0, str(REPO_DIR))

from benchmarks.throughput import BenchmarkError, private_redis, stop_worker  # noqa: E402

RATIO_TARGET, CREATE_TARGET, P95_TARGET = 0.7, 10.0, 100.0
POLL = 0.01


def start_worker(env: dict, processes: int, threads: int, log_path: Path):
    import subprocess

    with open(log_path, "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "dramatiq", "batch_bench_actors", "-p", str(processes),
                                 "-t", str(threads), "--path", str(BENCH_DIR)],
                                env=env, cwd=REPO_DIR, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for_fetchers(client, processes: int, worker, timeout: float = 120) -> float:
    started = time.monotonic()
    while client.zcard("fleet:__heartbeats__") < processes:
        if worker.poll() is not None:
            raise BenchmarkError(f"the worker exited with {worker.returncode}")
        if time.monotonic() - started > timeout:
            raise BenchmarkError("the worker processes did not start fetching")
        time.sleep(POLL)
    return time.monotonic()


def drain_plain(args, env, client, workdir) -> tuple[float, int]:
    from benchmarks.batch_bench_actors import QUEUE, plain_noop

    client.flushdb()
    plain_noop.send_many((n,) for n in range(args.items))
    worker = start_worker(env, args.processes, args.threads, workdir / "worker-plain.log")
    try:
        start = wait_for_fetchers(client, args.processes, worker)
        left_at_start = client.hlen(f"fleet:{QUEUE}.msgs")
        while client.hlen(f"fleet:{QUEUE}.msgs"):
            if worker.poll() is not None:
                raise BenchmarkError("the worker died while draining the plain messages")
            time.sleep(POLL)
        elapsed = time.monotonic() - start
    finally:
        stop_worker(worker)
    return elapsed, left_at_start


class PageTimer(threading.Thread):
    """Requests the batch's page and its JSON, alternately, until told to stop."""

    def __init__(self, client, batch_id: str):
        super().__init__(daemon=True)
        self.client, self.batch_id = client, batch_id
        self.times: dict[str, list[float]] = {"page": [], "api": []}
        self.stopping = threading.Event()

    def run(self) -> None:
        paths = {"page": f"/admin/batches/{self.batch_id}/", "api": f"/api/batches/{self.batch_id}"}
        while not self.stopping.is_set():
            for name, path in paths.items():
                started = time.perf_counter()
                response = self.client.get(path)
                self.times[name].append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    raise BenchmarkError(f"{path} answered {response.status_code}")
            self.stopping.wait(0.05)


def logged_in_client(settings):
    import re

    from actors.accounts import create_account
    from admin.app import create_app

    create_account("bench@example.com", "bench-password-1", "admin")
    client = create_app(settings).test_client()
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', client.get("/admin/login").text).group(1)
    client.post("/admin/login", data={"email": "bench@example.com", "password": "bench-password-1", "csrf_token": token})
    return client


def drain_batch(args, env, client, workdir, settings):
    from actors.batches import create_batch, live_totals
    from benchmarks.batch_bench_actors import KIND
    from db.models.batches import Batch, BatchItem

    client.flushdb()
    started = time.perf_counter()
    batch = create_batch(KIND, f"{args.items:,} no-op items", [f"item-{n}" for n in range(args.items)])
    created = time.perf_counter() - started
    web = logged_in_client(settings)
    worker = start_worker(env, args.processes, args.threads, workdir / "worker-batch.log")
    timer = PageTimer(web, batch.id)
    try:
        start = wait_for_fetchers(client, args.processes, worker)
        live_totals([batch])
        left_at_start = batch.total - batch.processed
        timer.start()
        while Batch.get_by_id(batch.id).finished_at is None:
            if worker.poll() is not None:
                raise BenchmarkError("the worker died while draining the batch")
            time.sleep(POLL)
        elapsed = time.monotonic() - start
    finally:
        timer.stopping.set()
        stop_worker(worker)
    timer.join(10)
    done = Batch.get_by_id(batch.id)
    runs = BatchItem.select().where((BatchItem.batch == batch.id) & (BatchItem.attempts == 1)
                                    & (BatchItem.status == "succeeded")).count()
    ok = done.status == "completed" and done.succeeded == args.items and runs == args.items
    return created, elapsed, left_at_start, timer.times, ok, done


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[18] if len(values) > 1 else values[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--processes", "-p", type=int, default=2)
    parser.add_argument("--threads", "-t", type=int, default=8)
    parser.add_argument("--database-url", help="default: SQLite in a temporary directory")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="fleet-bench-batches-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        try:
            redis_url, client = stack.enter_context(private_redis(workdir))
        except BenchmarkError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
        database_url = args.database_url or f"sqlite:///{workdir}/bench.db"
        os.environ.update(BROKER_URL=redis_url, DATABASE_URL=database_url, FLEET_VAR_DIR=str(workdir / "var"),
                          FLEET_SECRET_KEY="bench-secret")
        os.environ.pop("FLEET_STATE_REDIS_URL", None)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_DIR), os.environ.get("PYTHONPATH")]))}
        import logging

        from actors.runtime import boot
        from db.database import database
        from db.migrate import migrate

        settings = boot()
        logging.getLogger().setLevel(logging.WARNING)
        database.connect(reuse_if_open=True)
        migrate(database.obj)
        if args.database_url:  # a database of your own: start from empty tables
            for table in ("batch_item", "batch_chunk", "batch", "job_log", "panel_account"):
                database.execute_sql(f'DELETE FROM "{table}"')
        print(f"Fleet batches: {args.items:,} no-op items, `python -m dramatiq batch_bench_actors -p {args.processes} "
              f"-t {args.threads}`, {os.cpu_count()} CPUs, {'PostgreSQL' if args.database_url else 'SQLite (WAL)'}, "
              f"private redis-server")
        try:
            plain_seconds, plain_items = drain_plain(args, env, client, workdir)
            plain_rate = plain_items / plain_seconds
            print(f"plain messages: {plain_items:,} drained in {plain_seconds:.2f} s = {plain_rate:,.0f} msg/s")
            created, batch_seconds, batch_items, times, ok, done = drain_batch(args, env, client, workdir, settings)
        except BenchmarkError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
    batch_rate = batch_items / batch_seconds
    ratio = batch_rate / plain_rate
    met = lambda ok_: "met" if ok_ else "MISSED"  # noqa: E731
    print(f"batch created with {done.total:,} items in {-(-done.total // done.chunk_size):,} chunks, all sent: "
          f"{created:.2f} s   target <= {CREATE_TARGET:g} s {met(created <= CREATE_TARGET)}")
    print(f"batch drained: {batch_items:,} items in {batch_seconds:.2f} s = {batch_rate:,.0f} items/s")
    print(f"ratio batch/plain: {ratio:.2f}   target >= {RATIO_TARGET} {met(ratio >= RATIO_TARGET)}")
    for name, label in (("page", "detail page"), ("api", "/api/batches/<id>")):
        values = times[name]
        if values:
            print(f"{label:<18} while draining: {len(values)} requests, p50 {statistics.median(values):.1f} ms, "
                  f"p95 {p95(values):.1f} ms   target p95 <= {P95_TARGET:g} ms {met(p95(values) <= P95_TARGET)}")
    print(f"outcome: {done.status}, {done.succeeded:,} succeeded, each item run once: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
