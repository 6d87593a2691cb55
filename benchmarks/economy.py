"""The economy lane against the live lane: one translation batch of 1,000 files each way.

    python benchmarks/economy.py                      # 1,000 files, the defaults below
    python benchmarks/economy.py --items 100          # a quick check

What it does, with its own `redis-server`, a fresh SQLite database and var/, and the OpenAI
simulator in this process (answers over HTTP, the real `openai` client):

1. live: `fleet worker -p 1 -t 8` (started first; its boot is not counted) translates the files as a live batch, one chat completion a
   file, each call `--latency-ms` long, within the simulator's `--rpm` rate limit (a tier-1
   account's gpt-4o-mini limit is 500 requests a minute) that Fleet's budget learns and keeps;
2. economy: the same files as an economy batch: the worker sends them to the Batch API in one
   JSONL file, the simulator answers the batch after `--batch-seconds` (the provider: within
   24 h, often minutes to hours), and the poll (the scheduled task's pass, here every
   `--poll-seconds`) settles every item.

Reported: wall time from the batch's creation to its finish, cost and tokens, and the ratios.
The economy lane's wall time here is the simulated provider's; the point is the cost, and that
the rate limit is never touched. Exit status 1 if a check fails (an item not succeeded, or a
file translated other than once a lane).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
sys.path.insert(0, str(REPO_DIR))

from benchmarks.throughput import BenchmarkError, private_redis, stop_worker  # noqa: E402

API_KEY = "sk-fleet-bench-economy"
TEXT = ("Absatz {n}: Die Mannschaft trainiert dreimal pro Woche, und jeder Trainingstag beginnt mit "
        "zehn Minuten lockerem Laufen, gefolgt von Dehnübungen und einer kurzen Besprechung.\n")


def run_lane(lane: str, paths: list[Path], args, sim) -> dict:
    from actors import batches
    from actors import translations as tr
    from db.models.batches import Batch

    started = time.monotonic()
    batch = tr.plan_translation([str(p) for p in paths], "de", "nl", out_dir=str(paths[0].parent / lane),
                                lane=lane).start("benchmark")
    last_poll = 0.0
    while True:
        done = Batch.get_by_id(batch.id)
        if done.finished_at is not None:
            break
        if lane == "economy" and time.monotonic() - last_poll >= args.poll_seconds:
            batches.poll()
            last_poll = time.monotonic()
        if time.monotonic() - started > args.timeout:
            raise BenchmarkError(f"the {lane} batch did not finish within {args.timeout} s")
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    if (done.succeeded, done.failed) != (len(paths), 0):
        raise BenchmarkError(f"{lane}: {done.succeeded} succeeded, {done.failed} failed of {len(paths)}")
    settling = None
    if lane == "economy":  # from the poll that saw the provider batch ended to the batch's finish
        from db.models.batches import ProviderBatch

        ended = max(r.ended_at for r in ProviderBatch.select().where(ProviderBatch.batch == batch.id))
        settling = (done.finished_at - ended).total_seconds()
    return {"lane": lane, "seconds": elapsed, "cost": done.cost_usd, "tokens": done.tokens, "settling": settling}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=300, help="each live call's time at the provider")
    parser.add_argument("--rpm", type=int, default=500, help="the account's requests a minute")
    parser.add_argument("--batch-seconds", type=float, default=30, help="the provider's time for a batch")
    parser.add_argument("--poll-seconds", type=float, default=5, help="the poll's interval (production: 60)")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="fleet-bench-economy-"))
    with private_redis(workdir) as (redis_url, client):
        from core.simulators.openai_sim import start_openai_simulator

        sim = start_openai_simulator(api_key=API_KEY, latency_ms=args.latency_ms, rpm=args.rpm,
                                     batch_seconds=args.batch_seconds)
        os.environ.update(DATABASE_URL=f"sqlite:///{workdir}/fleet.db", BROKER_URL=redis_url,
                          FLEET_VAR_DIR=str(workdir / "var"), OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=sim.url,
                          FLEET_SECRET_KEY="bench")
        import subprocess

        from actors.runtime import boot
        from core.settings import get_settings
        from db.database import database
        from db.migrate import migrate

        boot(get_settings())
        import actors.all  # noqa: F401

        database.connect(reuse_if_open=True)
        migrate(database.obj)
        files = workdir / "files"
        files.mkdir()
        paths = []
        for n in range(args.items):
            path = files / f"text{n:05d}.txt"
            path.write_text(TEXT.format(n=n))
            paths.append(path)
        log = open(workdir / "worker.log", "wb")
        started = time.monotonic()
        worker = subprocess.Popen([sys.executable, "-m", "fleet", "worker", "-p", "1", "-t", "8"], cwd=REPO_DIR,
                                  env=dict(os.environ, PYTHONPATH=str(REPO_DIR)), stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while not client.zcard("fleet:__heartbeats__"):  # worker boot is not the lanes' time
                if worker.poll() is not None or time.monotonic() - started > 300:
                    raise BenchmarkError("the worker did not start fetching")
                time.sleep(0.1)
            results = [run_lane(lane, paths, args, sim) for lane in ("live", "economy")]
        except BenchmarkError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
        finally:
            stop_worker(worker)
            log.close()
            sim_state = sim._get()
            sim.stop()
        counts = sim_state["translations"]["by_segment"]
        if len(counts) != args.items or set(counts.values()) != {2}:
            print("benchmark failed: a file was not translated exactly once on each lane", file=sys.stderr)
            return 1
        live, economy = results
        print(f"{args.items:,} files, live calls of {args.latency_ms:g} ms within {args.rpm} requests/min; "
              f"the provider's batch time {args.batch_seconds:g} s, polled every {args.poll_seconds:g} s")
        print(f"{'lane':<8} {'wall time':>10} {'cost':>12} {'tokens':>10}")
        for r in results:
            settled = f"  (settling the results: {r['settling']:.1f} s)" if r["settling"] is not None else ""
            print(f"{r['lane']:<8} {r['seconds']:>9.1f}s {'$' + format(r['cost'], '.6f'):>12} {r['tokens']:>10,}{settled}")
        print(f"economy / live: wall time × {economy['seconds'] / live['seconds']:.2f}, "
              f"cost × {economy['cost'] / live['cost']:.2f} (saved ${live['cost'] - economy['cost']:.6f}), "
              f"requests against the rate limit: {args.items:,} live, 0 economy "
              f"({len(sim_state['batches']['submitted'])} Batch API file(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
