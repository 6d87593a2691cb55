"""The scheduler under leader deaths: 3 `fleet scheduler` processes, 1,000 entries every 10 s,
the leader SIGKILLed while they run.

    python benchmarks/scheduler.py                                   # 1,000 entries, 180 s, 2 kills (about 3.5 min)
    python benchmarks/scheduler.py --entries 50 --duration 40 --kills 1          # a quick check
    python benchmarks/scheduler.py --database postgresql://postgres@127.0.0.1/postgres  # on PostgreSQL

What it does: starts its own `redis-server` on a free port, a fresh SQLite database in a
temporary directory (or a fresh PostgreSQL database it creates next to the one named by
--database and drops at the end), writes a schedule of N entries of `jobs.cleanup` every
10 s (`without_overlapping = false`, so every slot is sent), and starts 3 real `fleet
scheduler` processes. Every duration/(kills+1) seconds, one second after a slot, it SIGKILLs
the leader and starts a replacement, so 3 schedulers run throughout. No worker runs: every
message sent stays in its queue, where it is counted.

Figures (targets from the design):
    duplicate emissions   messages in the queue beyond one per ledger row, plus ledger rows
                          sharing an (entry, slot); target 0
    late slots p99        emitted_at - slot time over every emitted slot; target <= 1 s.
                          Reported over all slots and over the slots not due during a takeover
    longest gap after a   from a SIGKILL until the first slot emitted after it (a slot is
    leader SIGKILL        due 9 s after each kill); target <= 15 s
    takeover              from a SIGKILL until another scheduler holds the lease
Also: missed slots (none expected: a handover is shorter than FLEET_SCHEDULE_GRACE).

Exit status 1 when there is a duplicate, 0 otherwise (the other targets are reported).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import redis
from dramatiq import Message

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
sys.path.insert(0, str(REPO_DIR))

from db.database import open_database  # noqa: E402
from db.migrate import migrate  # noqa: E402
from db.models.schedule import ScheduleRun  # noqa: E402
from tests.servers import RedisServer, scratch_postgres  # noqa: E402

INTERVAL = 10
LEADER_KEY = "fleet:scheduler:leader"
QUEUE = "fleet:maintenance.msgs"  # where jobs.cleanup messages wait


def schedule_file(path: Path, entries: int) -> None:
    lines = []
    for n in range(entries):
        lines += [f"[cleanup-{n:04d}]", 'task = "jobs.cleanup"', f"args = {{ days = {n + 1} }}",
                  f'every = "{INTERVAL}s"', "without_overlapping = false", ""]
    path.write_text("\n".join(lines))


class Schedulers:
    def __init__(self, env: dict, logs: Path):
        self.env, self.logs, self.procs = env, logs, []

    def start(self) -> subprocess.Popen:
        log = open(self.logs / f"scheduler-{len(self.procs)}.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "fleet", "scheduler"], env=self.env, cwd=REPO_DIR,
                                stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def leader_pid(client) -> int | None:
    value = client.get(LEADER_KEY)
    return int(value.decode().rsplit(":", 1)[1]) if value else None


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def run(args) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="fleet-bench-scheduler-"))
    servers = contextlib.ExitStack()
    redis_server = servers.enter_context(RedisServer(tmp / "redis"))
    client = redis.Redis.from_url(redis_server.url)
    if args.database:
        db_url = servers.enter_context(scratch_postgres(args.database, "fleet_bench"))
    else:
        db_url = f"sqlite:///{tmp}/fleet.db"
    db = open_database(db_url)
    migrate(db)
    path = tmp / "schedule.toml"
    schedule_file(path, args.entries)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_") and k not in ("BROKER_URL", "DATABASE_URL")}
    env.update(BROKER_URL=redis_server.url, DATABASE_URL=db_url, FLEET_SCHEDULE=str(path),
               FLEET_VAR_DIR=str(tmp / "var"), PYTHONUNBUFFERED="1")
    schedulers = Schedulers(env, tmp)
    kills: list[dict] = []
    try:
        for _ in range(3):
            schedulers.start()
        while leader_pid(client) is None:
            time.sleep(0.1)
        started = time.time()
        print(f"{args.entries} entries every {INTERVAL} s, 3 schedulers, {args.duration} s, {args.kills} kill(s); "
              f"database {'PostgreSQL' if args.database else 'SQLite'}; logs in {tmp}", flush=True)
        for k in range(1, args.kills + 1):
            due = started + args.duration * k / (args.kills + 1)
            due = -(-int(due) // INTERVAL) * INTERVAL + 1  # one second after a slot
            time.sleep(max(0.0, due - time.time()))
            pid = leader_pid(client)
            victim = next(p for p in schedulers.procs if p.pid == pid)
            killed_at = time.time()
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            schedulers.start()
            while leader_pid(client) in (None, pid):
                time.sleep(0.02)
            kills.append({"at": killed_at, "takeover": time.time() - killed_at})
            print(f"  SIGKILL {pid} at +{killed_at - started:.0f} s; new leader after {kills[-1]['takeover']:.1f} s",
                  flush=True)
        # on to the end, and past the first slot after the last kill
        end = max(started + args.duration, kills[-1]["at"] + INTERVAL + 5 if kills else 0)
        time.sleep(max(0.0, end - time.time()))
    finally:
        schedulers.stop()

    try:
        with ScheduleRun.bind_ctx(db):
            runs = list(ScheduleRun.select(ScheduleRun.id, ScheduleRun.name, ScheduleRun.slot_time, ScheduleRun.state,
                                           ScheduleRun.emitted_at))
        messages = [Message.decode(raw) for raw in client.hvals(QUEUE)]
    finally:
        db.close()
        servers.close()

    def wall(moment: datetime) -> float:
        return moment.replace(tzinfo=timezone.utc).timestamp()

    sent = [r for r in runs if r.state == "emitted"]
    per_run = Counter(m.options.get("schedule_run") for m in messages)
    per_slot = Counter((r.name, r.slot_time) for r in runs)
    duplicates = sum(n - 1 for n in per_run.values() if n > 1) + sum(n - 1 for n in per_slot.values() if n > 1)
    late = [(r.emitted_at - r.slot_time).total_seconds() for r in sent]
    takeovers = [(k["at"], k["at"] + k["takeover"]) for k in kills]
    steady = [(r.emitted_at - r.slot_time).total_seconds() for r in sent
              if not any(a <= wall(r.slot_time) <= b for a, b in takeovers)]
    gaps = []
    for k in kills:
        after = [wall(r.emitted_at) for r in sent if wall(r.emitted_at) > k["at"]]
        gaps.append(min(after) - k["at"] if after else float("inf"))
    states = Counter(r.state for r in runs)

    print()
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs")
    print(f"slots in the ledger: {len(runs)} ({', '.join(f'{n} {s}' for s, n in sorted(states.items()))}); "
          f"messages queued: {len(messages)}")
    print(f"duplicate emissions: {duplicates} (target 0)")
    print(f"late slots: p50 {percentile(late, 50):.3f} s, p99 {percentile(late, 99):.3f} s, max {max(late):.3f} s "
          f"(target p99 <= 1 s)")
    if kills:
        print(f"late slots not due during a takeover: p99 {percentile(steady, 99):.3f} s, max {max(steady):.3f} s")
        print("longest gap after a leader SIGKILL: " + ", ".join(f"{g:.1f} s" for g in gaps)
              + " (target <= 15 s); takeover: " + ", ".join(f"{k['takeover']:.1f} s" for k in kills))
    print(f"missed slots: {states.get('missed', 0)}")
    return 1 if duplicates else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--duration", type=int, default=180, help="seconds the schedulers run (at most 600)")
    parser.add_argument("--kills", type=int, default=2, help="leader SIGKILLs, spread over the run")
    parser.add_argument("--database", help="a PostgreSQL URL; a fresh database is created next to it")
    args = parser.parse_args()
    if not 0 < args.duration <= 600:
        parser.error("--duration must be 1 to 600 seconds")
    sys.exit(run(args))


if __name__ == "__main__":
    main()
