"""Throughput: bare Dramatiq vs Dramatiq with Fleet's whole middleware stack, for two actors.

    python benchmarks/throughput.py                       # no-op: 20,000 messages, -p 2 -t 8;
                                                          # full: 2,000 messages, -p 2 -t 32; 3 runs each
    python benchmarks/throughput.py --messages 2000 --full-messages 300 --runs 1   # a quick check

The actors (`benchmarks/bench_actors.py`):

    no-op  does nothing; its jobs end before the JobLog's next flush, so under Fleet each
           attempt costs one JobLog insert, and no breaker or unique lock is involved
    full   works 0.6 s, longer than a JobLog flush, so its start row is written before its
           finish row (an insert, then an update); under Fleet it is declared unique=True,
           service="openai" and its work is a call through the openai breaker, so every
           message claims, marks running and releases its lock, checks and calls the breaker

What it does: starts its own `redis-server` on a free port (no persistence) and, per run,
flushes it, enqueues all N messages for the actor (enqueue time not counted), then starts
the real worker, `python -m dramatiq bench_actors -p P -t T`, and waits until the queue is
drained (every message acked). Runs alternate bare, Fleet, bare, Fleet, ...; the summary is
the median of each side and the ratio Fleet/bare for each actor (targets: no-op >= 0.9,
full >= 0.75).

    bare   RedisBroker with Dramatiq's default middleware
    Fleet  core.broker.build_broker (via actors.runtime.boot): TraceContext, JobLogWriter,
           CircuitDeferral, UniqueJobs, BackoffRetries and Dramatiq's own, JobLog on, into a
           fresh, migrated SQLite database per run (in a temporary directory)

What "msg/s" measures: worker boot is excluded. The clock starts when every worker process
has fetched from the queue (all P worker ids are in the broker's heartbeat set) and stops
when the last message is acked (the broker's message hash is empty); the rate is the
messages acked in that window divided by its length. Messages acked before the window (by a
process that booted earlier) are not counted. Fleet's JobLog rows still buffered when the
queue drains (up to half a second's worth) are written after it, so for Fleet the script also
waits until the database holds all N `success` rows and reports that rate too ("until JobLog
written"); with few messages most rows are written after the drain, which flatters Fleet.

After each Fleet run the worker is stopped with SIGTERM (which flushes the JobLog) and the
JobLog must hold exactly N `success` rows, one per message; for the full actor the script
also watches the JobLog during the run and reports the most `started` rows it saw at once
(start rows written before their finish rows). Exit status: 1 if a check fails (or a run
breaks), 0 otherwise; the targets are only reported, met or missed.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import dramatiq
import redis
from peewee import fn

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
sys.path.insert(0, str(REPO_DIR))

from benchmarks.bench_actors import NAMESPACES, QUEUE, SIDE_ENV  # noqa: E402
from db.database import open_database  # noqa: E402
from db.migrate import migrate  # noqa: E402
from db.models.jobs import JobLog  # noqa: E402
from tests.servers import RedisServer  # noqa: E402

TARGETS = {"noop": 0.9, "full": 0.75}
KIND_LABELS = {"noop": "no-op", "full": "full (unique, service, 0.6 s)"}
SIDES = ("bare", "fleet")
LABELS = {"bare": "bare Dramatiq", "fleet": "Fleet"}
POLL_INTERVAL = 0.005  # seconds between looks at the queue
STOP_TIMEOUT = 60
# Variables a developer's shell might carry that would point a worker elsewhere.
INHERITED_FLEET_VARS = ("BROKER_URL", "DATABASE_URL", "FLEET_STATE_REDIS_URL", "FLEET_VAR_DIR", SIDE_ENV)


class BenchmarkError(Exception):
    pass


@dataclass
class Run:
    side: str
    kind: str
    number: int
    boot_seconds: float  # worker start until every worker process fetches
    window_seconds: float  # from then until the last message is acked
    window_messages: int  # messages acked in the window
    joblog_lag: float | None = None  # Fleet: seconds from the drain until the JobLog holds N success rows
    joblog: dict | None = None  # Fleet: rows by status, after the worker stopped
    started_seen: int | None = None  # Fleet, full actor: most `started` rows seen at once during the run

    @property
    def rate(self) -> float:
        return self.window_messages / self.window_seconds

    @property
    def rate_until_joblog(self) -> float | None:
        if self.joblog_lag is None:
            return None
        return self.window_messages / (self.window_seconds + self.joblog_lag)

    @property
    def joblog_ok(self) -> bool:
        return self.joblog is None or self.joblog.get("ok", False)


# -- the private Redis ------------------------------------------------------------------
@contextlib.contextmanager
def private_redis(workdir: Path):
    """A throwaway redis-server (tests/servers.py), without persistence: its URL and a client."""
    try:
        server = RedisServer(workdir / "redis").start()
    except RuntimeError as exc:
        raise BenchmarkError(f"the benchmark's redis-server did not start: {exc}") from None
    client = redis.Redis.from_url(server.url)
    try:
        yield server.url, client
    finally:
        client.close()
        server.stop()


# -- one run ------------------------------------------------------------------------------
def side_env(side: str, redis_url: str, workdir: Path, database_url: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in INHERITED_FLEET_VARS}
    env.update({SIDE_ENV: side, "BROKER_URL": redis_url, "FLEET_VAR_DIR": str(workdir / "var"),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_DIR), env.get("PYTHONPATH")]))})
    if database_url:
        env["DATABASE_URL"] = database_url
    return env


def fresh_joblog_database(workdir: Path, name: str) -> str:
    url = f"sqlite:///{workdir}/joblog-run{name}.db"
    db = open_database(url)
    migrate(db)
    db.close()
    return url


def enqueue_messages(env: dict, kind: str, count: int, client: redis.Redis, namespace: str) -> None:
    subprocess.run([sys.executable, str(BENCH_DIR / "bench_actors.py"), kind, str(count)],
                   env=env, cwd=REPO_DIR, check=True, stdout=subprocess.DEVNULL)
    queued = client.llen(f"{namespace}:{QUEUE}")
    if queued != count:
        raise BenchmarkError(f"enqueued {queued} messages, expected {count}")


def start_worker(env: dict, processes: int, threads: int, log_path: Path) -> subprocess.Popen:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "dramatiq", "bench_actors", "-p", str(processes), "-t", str(threads),
             "--path", str(BENCH_DIR)],
            env=env, cwd=REPO_DIR, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a broken run can end all of it
        )


def wait_until_drained(worker, client, namespace, count, processes, timeout):
    """Poll the broker's keys; return (boot seconds, window seconds, messages in window)."""
    heartbeats, bodies = f"{namespace}:__heartbeats__", f"{namespace}:{QUEUE}.msgs"
    started = time.monotonic()
    first_ack = all_fetching = None  # (time, messages left)
    while True:
        now = time.monotonic()
        pipe = client.pipeline(transaction=False)
        pipe.zcard(heartbeats)
        pipe.hlen(bodies)
        fetching, left = pipe.execute()
        if first_ack is None and left < count:
            first_ack = (now, left)
        if all_fetching is None and fetching >= processes:
            all_fetching = (now, left)
        if left == 0:
            # With few messages one process may drain the queue before the other boots:
            # then the window starts at the first ack.
            start, left_at_start = all_fetching or first_ack
            if left_at_start == 0:
                raise BenchmarkError("the queue drained between two polls; use more --messages")
            return start - started, now - start, left_at_start
        if worker.poll() is not None:
            raise BenchmarkError(f"the worker exited with {worker.returncode} before the queue drained")
        if now - started > timeout:
            raise BenchmarkError(f"the queue did not drain within {timeout:.0f} s ({left} messages left)")
        time.sleep(POLL_INTERVAL)


def wait_for_joblog(database_url: str, count: int, timeout: float) -> float:
    """Seconds until the JobLog holds `count` success rows (the writer thread flushes twice a second)."""
    started = time.monotonic()
    db = open_database(database_url)
    try:
        with JobLog.bind_ctx(db):
            while JobLog.select().where(JobLog.status == "success").count() < count:
                if time.monotonic() - started > timeout:
                    raise BenchmarkError(f"the JobLog did not reach {count} success rows within {timeout:.0f} s")
                time.sleep(0.01)
    finally:
        db.close()
    return time.monotonic() - started


def stop_worker(worker: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM to Dramatiq's main process only, as `fleet up` does; it stops its workers.
    Whatever is left of the worker's process group after `timeout` is killed."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.pid, signal.SIGKILL)  # the group is the worker's own (start_new_session)
        if worker.poll() is None:
            worker.wait()
        raise BenchmarkError(f"the worker did not stop within {timeout:.0f} s of SIGTERM")


def check_joblog(database_url: str, count: int) -> dict:
    db = open_database(database_url)
    try:
        with JobLog.bind_ctx(db):
            by_status = {row.status: row.n for row in
                         JobLog.select(JobLog.status, fn.COUNT(JobLog.id).alias("n")).group_by(JobLog.status)}
            messages = JobLog.select(JobLog.message_id).where(JobLog.status == "success").distinct().count()
    finally:
        db.close()
    ok = by_status == {"success": count} and messages == count
    return {"ok": ok, "by_status": by_status, "distinct_messages": messages}


class StartedRows(threading.Thread):
    """Watches a Fleet run's JobLog: the most rows still `started` at one look."""

    def __init__(self, database_url: str):
        super().__init__(daemon=True)
        self.database_url = database_url
        self.most = 0
        self.done = threading.Event()

    def run(self) -> None:
        db = open_database(self.database_url)
        with JobLog.bind_ctx(db):
            while not self.done.wait(0.1):
                with db.connection_context():
                    self.most = max(self.most, JobLog.select().where(JobLog.status == "started").count())
        db.close_all()


def run_once(side, kind, number, args, redis_url, client, workdir) -> Run:
    count, threads = (args.messages, args.threads) if kind == "noop" else (args.full_messages, args.full_threads)
    client.flushdb()
    database_url = fresh_joblog_database(workdir, f"{kind}{number}") if side == "fleet" else None
    env = side_env(side, redis_url, workdir, database_url)
    namespace = NAMESPACES[side]
    enqueue_messages(env, kind, count, client, namespace)
    log_path = workdir / f"worker-{side}-{kind}-run{number}.log"
    watcher = StartedRows(database_url) if side == "fleet" and kind == "full" else None
    worker = start_worker(env, args.processes, threads, log_path)
    if watcher:
        watcher.start()
    try:
        boot, window, messages = wait_until_drained(
            worker, client, namespace, count, args.processes, timeout=args.timeout)
        joblog_lag = wait_for_joblog(database_url, count, timeout=30) if side == "fleet" else None
        stop_worker(worker)
    except BaseException as exc:
        with contextlib.suppress(BenchmarkError):
            stop_worker(worker, timeout=10)
        tail = log_path.read_text(errors="replace")[-3000:]
        if isinstance(exc, BenchmarkError):
            raise BenchmarkError(f"{LABELS[side]} {kind} run {number}: {exc}\n--- worker log (tail) ---\n{tail}") from None
        raise
    finally:
        if watcher:
            watcher.done.set()
            watcher.join(10)
    joblog = check_joblog(database_url, count) if side == "fleet" else None
    return Run(side, kind, number, boot, window, messages, joblog_lag, joblog, watcher.most if watcher else None)


# -- report -------------------------------------------------------------------------------
def describe_joblog(run: Run, count: int) -> str:
    if run.joblog is None:
        return "-"
    success = run.joblog["by_status"].get("success", 0)
    others = {k: v for k, v in run.joblog["by_status"].items() if k != "success"}
    text = f"{success}/{count} success rows"
    if others:
        text += " + " + ", ".join(f"{v} {k}" for k, v in sorted(others.items()))
    return text + (" ok" if run.joblog_ok else " FAILED")


def print_header(args, client) -> None:
    import peewee

    print(f"Fleet throughput: no-op {args.messages:,} messages a run with `-p {args.processes} -t {args.threads}`, "
          f"full {args.full_messages:,} with `-p {args.processes} -t {args.full_threads}` "
          f"(`python -m dramatiq bench_actors`), {args.runs} runs a side, alternating bare/Fleet")
    print(f"python {platform.python_version()}, dramatiq {dramatiq.__version__}, peewee {peewee.__version__}, "
          f"redis-server {client.info('server')['redis_version']} (private, no persistence), "
          f"{os.cpu_count()} CPUs; Fleet's JobLog on SQLite (WAL) in a temporary directory")
    print("msg/s = messages acked from the moment every worker process fetches until the queue is drained,")
    print("        divided by that time (worker boot excluded; boot shown separately);")
    print("        +JobLog s = from then until the JobLog holds every success row (Fleet)")
    print()
    print(f"{'run':>3}  {'actor':<6} {'side':<13} {'boot s':>6}  {'window s':>8}  {'messages':>8}  {'msg/s':>7}  "
          f"{'+JobLog s':>9}  JobLog")


def print_run(run: Run, count: int) -> None:
    seen = "" if run.started_seen is None else f"; up to {run.started_seen} start rows written before their finish"
    print(f"{run.number:>3}  {run.kind:<6} {LABELS[run.side]:<13} {run.boot_seconds:>6.2f}  {run.window_seconds:>8.2f}  "
          f"{run.window_messages:>8}  {run.rate:>7.0f}  {'' if run.joblog_lag is None else f'{run.joblog_lag:.2f}':>9}  "
          f"{describe_joblog(run, count)}{seen}", flush=True)


def print_summary(runs: list[Run], args) -> bool:
    ok = True
    print()
    print(f"median of {args.runs}:")
    for kind in KIND_LABELS:
        mine = [r for r in runs if r.kind == kind]
        count = args.messages if kind == "noop" else args.full_messages
        bare = statistics.median(r.rate for r in mine if r.side == "bare")
        fleet = statistics.median(r.rate for r in mine if r.side == "fleet")
        ratio, target = fleet / bare, TARGETS[kind]
        fleet_joblog = statistics.median(r.rate_until_joblog for r in mine if r.side == "fleet")
        fleet_runs = [r for r in mine if r.side == "fleet"]
        passed = sum(r.joblog_ok for r in fleet_runs)
        started = all(r.started_seen for r in fleet_runs) if kind == "full" else True
        ok = ok and passed == len(fleet_runs) and started
        print(f"  {KIND_LABELS[kind]}:")
        for label, value in [
            ("bare Dramatiq", f"{bare:>6.0f} msg/s"),
            ("Fleet", f"{fleet:>6.0f} msg/s"),
            ("ratio Fleet/bare", f"{ratio:>6.2f}        target >= {target}: {'met' if ratio >= target else 'missed'}"),
            ("Fleet, until JobLog", f"{fleet_joblog:>6.0f} msg/s  (ratio {fleet_joblog / bare:.2f}; the drain plus writing the last rows)"),
            ("JobLog check", f"{'passed' if passed == len(fleet_runs) else 'FAILED'}: {passed}/{len(fleet_runs)} Fleet runs "
                             f"with exactly {count} success rows, one per message"
                             + ("" if kind == "noop" else f"; start rows seen during every run: {'yes' if started else 'NO'}")),
        ]:
            print(f"    {label:<20} {value}")
    return ok


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000, help="messages a run (default 20000)")
    parser.add_argument("--runs", type=int, default=3, help="runs a side; the median is reported (default 3)")
    parser.add_argument("--processes", "-p", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--threads", "-t", type=int, default=8, help="threads a worker process, no-op actor (default 8)")
    parser.add_argument("--full-messages", type=int, default=2_000, help="messages a run, full actor (default 2000)")
    parser.add_argument("--full-threads", type=int, default=32,
                        help="threads a worker process, full actor (default 32: its jobs sleep 0.6 s)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds a run may take to drain (default 600)")
    args = parser.parse_args(argv)
    if min(args.messages, args.full_messages, args.runs, args.processes, args.threads, args.full_threads) < 1:
        parser.error("--messages, --full-messages, --runs, --processes, --threads and --full-threads must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        workdir = Path(tmp)
        try:
            with private_redis(workdir) as (redis_url, client):
                print_header(args, client)
                runs = []
                for kind in KIND_LABELS:
                    for number in range(1, args.runs + 1):
                        for side in SIDES:
                            run = run_once(side, kind, number, args, redis_url, client, workdir)
                            print_run(run, args.messages if kind == "noop" else args.full_messages)
                            runs.append(run)
                ok = print_summary(runs, args)
        except BenchmarkError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
