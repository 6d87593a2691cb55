"""Scale-out: 1, 2 and 3 hosts in network namespaces (tests/netns.py), each with its own host
name and a real `fleet worker -p 1 -t 8`, sharing a private Redis, PostgreSQL (a scratch
database on FLEET_BENCH_POSTGRES_URL, default the machine's) and the OpenAI simulator at 300 ms
latency over their veth links. Needs root.

    python benchmarks/hosts.py                    # 1, 2, 3 hosts, a 20 s window each, then the partition
    python benchmarks/hosts.py --hosts 1 2 --window 10 --no-partition
    python benchmarks/hosts.py --hosts 3 --plans-per-host 300     # a busy machine: less work to wait for

For each host count: one-day workout plans queued (`send_many`), a warm-up, then the days
generated in the window (JobLog successes), as days/s and as a ratio to one host; the most
PostgreSQL connections open to the database while it ran, against the budget that
`fleet db connections` computes for those workers (the loader's connection aside). Then, with the
largest host count: one host cut off (its veth down) for 60 s mid-work, more plans queued when
its link returns, and: the provider calls beyond one a day (duplicates), the seconds from the
link's return to the cut host's next success (recovery), nothing lost (every day generated).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers import Processes  # noqa: E402
from tests.netns import Hosts, NetnsFleet, unavailable  # noqa: E402
from tests.servers import DEFAULT_POSTGRES_URL, scratch_postgres  # noqa: E402

POSTGRES_URL = os.environ.get("FLEET_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL)
API_KEY = "sk-bench-hosts-7d1e"
THREADS = 8
LATENCY_MS = 300
PARTITION = 60
ENV = {"FLEET_HEARTBEAT_TIMEOUT": "10", "OPENAI_TIMEOUT": "15", "FLEET_RETRY_DELAYS": "1,2,3"}


def _wait(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.25)
    raise SystemExit(f"timed out after {timeout:g} s waiting for {what}")


def budget(hosts: int) -> int:
    """`fleet db connections`'s total for these workers alone."""
    done = subprocess.run([sys.executable, "-m", "fleet", "db", "connections", "--hosts", str(hosts), "-p", "1",
                           "-t", str(THREADS), "--web", "0", "--schedulers", "0", "--cli", "0"],
                          capture_output=True, text=True, env={**os.environ, "DATABASE_URL": POSTGRES_URL,
                                                               "FLEET_VAR_DIR": tempfile.gettempdir()})
    found = re.search(r"^\s*total\s+(\d+)", done.stdout, re.M)
    if not found:
        raise SystemExit(f"fleet db connections: {done.stdout}{done.stderr}")
    return int(found.group(1))


class PeakConnections:
    """The most connections open to one database, sampled every quarter second."""

    def __init__(self, fleet: NetnsFleet):
        self.fleet, self.peak, self._stop = fleet, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        name = self.fleet.database_url.rpartition("/")[2]
        while not self._stop.wait(0.25):
            [(n,)] = self.fleet._query("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                                       (name,))
            self.peak = max(self.peak, n)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)


def run(count: int, window: float, partition: bool, workdir: Path, plans_per_host: int) -> dict:
    from db.database import open_database
    from db.migrate import migrate

    with scratch_postgres(POSTGRES_URL, "fleet_bench_hosts") as url:
        db = open_database(url)
        migrate(db)
        db.close_all()
        processes = Processes(workdir)
        with Hosts(count) as hosts, NetnsFleet(hosts, workdir, url, processes, api_key=API_KEY,
                                               latency_ms=LATENCY_MS, env=ENV) as fleet:
            for host in hosts.hosts:
                fleet.start_worker(host, processes=1, threads=THREADS)
            planned = count * plans_per_host
            fleet.load(planned)
            with PeakConnections(fleet) as connections:
                _wait(lambda: all(fleet.successes().get(h.name, 0) >= THREADS for h in hosts.hosts), 120, "warm-up")
                before = sum(fleet.successes().values())
                time.sleep(window)
                done = sum(fleet.successes().values()) - before
                if fleet.days().get("pending", 0) == 0:
                    raise SystemExit("the work ran out inside the window: raise --plans-per-host")
                result = {"hosts": count, "days_per_s": done / window, "peak_connections": connections.peak,
                          "budget": budget(count), "load": os.getloadavg()[0]}
                if partition:
                    result.update(partitioned(fleet, hosts, planned))
        return result


def partitioned(fleet: NetnsFleet, hosts: Hosts, planned: int) -> dict:
    cut = hosts.hosts[-1]
    fleet.hosts.cut(cut)
    time.sleep(PARTITION)
    fleet.hosts.restore(cut)
    returned = time.monotonic()
    before = fleet.successes().get(cut.name, 0)
    fleet.load(200)
    _wait(lambda: fleet.successes().get(cut.name, 0) > before, 120, "the cut host back at work")
    recovery = time.monotonic() - returned
    total = planned + 200
    _wait(lambda: fleet.days().get("generated", 0) == total, 600, f"{total} days generated")
    days = fleet.days()
    return {"duplicates": fleet.provider_calls() - total, "recovery_s": recovery,
            "lost": total - days.get("generated", 0), "statuses": fleet.job_statuses()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--window", type=float, default=20)
    parser.add_argument("--no-partition", action="store_true")
    parser.add_argument("--plans-per-host", type=int, default=600,
                        help="one-day plans queued a host (enough for the warm-up and the window)")
    args = parser.parse_args()
    why = unavailable()
    if why:
        raise SystemExit(f"cannot run: {why}")
    results = []
    for count in args.hosts:
        partition = not args.no_partition and count == max(args.hosts)
        with tempfile.TemporaryDirectory(prefix="fleet-bench-hosts-") as tmp:
            result = run(count, args.window, partition, Path(tmp), args.plans_per_host)
        results.append(result)
        one = next((r["days_per_s"] for r in results if r["hosts"] == 1), None)
        ratio = f", {result['days_per_s'] / one:.2f} × one host" if one else ""
        print(f"{count} host(s): {result['days_per_s']:.1f} days/s{ratio}; "
              f"PostgreSQL connections at peak {result['peak_connections']} (budget {result['budget']}); "
              f"load average {result['load']:.1f}", flush=True)
        if partition:
            print(f"  {PARTITION} s partition of one host: {result['duplicates']} duplicate provider call(s), "
                  f"back at work {result['recovery_s']:.1f} s after its link returned, {result['lost']} day(s) lost; "
                  f"JobLog {result['statuses']}", flush=True)


if __name__ == "__main__":
    main()
