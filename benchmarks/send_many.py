"""How long `send_many` takes to send N unique jobs, on Redis and on RabbitMQ.

    python benchmarks/send_many.py                  # 300 jobs, each broker 5 times
    python benchmarks/send_many.py --jobs 3000 --runs 3

Each run is a fresh process (`--child`) with the broker of BROKER_URL and a private
redis-server as the state Redis (unique locks): it sends N `generate_user_workout_plan` jobs
of distinct arguments through `send_many` and prints the seconds that took (the process's
start-up not included). RabbitMQ is FLEET_BENCH_RABBITMQ_URL (default the machine's
amqp://guest:guest@127.0.0.1:5672/); its queue is purged after each run. Prints the median.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.servers import RedisServer  # noqa: E402

RABBITMQ_URL = os.environ.get("FLEET_BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")


def child(jobs: int) -> None:
    import uuid

    from actors.runtime import boot
    from actors.workouts import generate_user_workout_plan

    boot()
    user = uuid.uuid4().int % 1_000_000_000
    started = time.perf_counter()
    sent, skipped = generate_user_workout_plan.send_many((user, plan) for plan in range(jobs))
    seconds = time.perf_counter() - started
    assert (sent, skipped) == (jobs, 0), (sent, skipped)
    broker = generate_user_workout_plan.broker
    if hasattr(broker, "channel") and not hasattr(broker, "client"):
        broker.channel.queue_purge("workouts")
    else:
        broker.client.flushdb()
    print(f"{seconds:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.jobs)
        return
    with tempfile.TemporaryDirectory(prefix="fleet-send-") as tmp, RedisServer(Path(tmp) / "redis") as state:
        for name, broker_url in (("redis", state.url), ("rabbitmq", RABBITMQ_URL)):
            env = {**os.environ, "BROKER_URL": broker_url, "FLEET_STATE_REDIS_URL": state.url,
                   "FLEET_VAR_DIR": str(Path(tmp) / "var"), "DATABASE_URL": f"sqlite:///{tmp}/fleet.db"}
            times = []
            for _ in range(args.runs):
                done = subprocess.run([sys.executable, __file__, "--child", "--jobs", str(args.jobs)], env=env,
                                      capture_output=True, text=True, timeout=300)
                if done.returncode != 0:
                    sys.exit(f"{name}: {done.stderr[-2000:]}")
                times.append(float(done.stdout.split()[-1]))
            print(f"{name:9} {args.jobs} jobs: median {statistics.median(times):.3f} s "
                  f"(runs: {', '.join(f'{t:.3f}' for t in times)})")


if __name__ == "__main__":
    main()
