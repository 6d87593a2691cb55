"""The actors the benchmarks measure, bare or under Fleet.

`FLEET_BENCH_SIDE` (set by throughput.py and latency.py) says which broker they are declared on:

    bare   RedisBroker(url=BROKER_URL) with Dramatiq's default middleware
    fleet  actors.runtime.boot(): Fleet's broker, all of Fleet's middleware (JobLog on)

    bench_noop    does nothing: the job system's own cost (throughput.py, "no-op")
    bench_full    works JOB_SECONDS, longer than a JobLog flush, so its start row is written
                  before its finish row; under Fleet it is declared unique=True, service="openai"
                  and makes its work a call through the openai breaker (throughput.py, "full")
    bench_probe   records how long after its sending it started (latency.py)

`python -m dramatiq bench_actors --path benchmarks` imports this module in each worker
process; `python benchmarks/bench_actors.py ACTOR N` enqueues N messages for the worker to
eat; `python benchmarks/bench_actors.py probe N GAP` sends N probes GAP seconds apart.
"""
from __future__ import annotations

import os
import sys
import time

import dramatiq
import redis

SIDE_ENV = "FLEET_BENCH_SIDE"
QUEUE = "bench"
ACTORS = {"noop": "bench_noop", "full": "bench_full"}
NAMESPACES = {"bare": "dramatiq", "fleet": "fleet"}  # Redis key prefix of each side's broker
LATENCY_KEY = "bench:latency"
PIPELINE_CHUNK = 1_000
JOB_SECONDS = 0.6  # > the JobLog's flush interval (0.5 s)

_client = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["BROKER_URL"])
    return _client


def noop(n: int) -> None:
    """Does nothing: the benchmark measures the job system, not the job."""


def work(n: int) -> None:
    time.sleep(JOB_SECONDS)


def work_through_breaker(n: int) -> None:
    from core.breakers import breaker

    breaker("openai").call(time.sleep, JOB_SECONDS)


def probe(sent_at: float) -> None:
    _redis().rpush(LATENCY_KEY, repr(time.time() - sent_at))


def declare(side: str) -> dict[str, dramatiq.Actor]:
    if side == "fleet":
        from actors.runtime import boot, fleet_actor

        boot()  # settings from BROKER_URL, DATABASE_URL, FLEET_VAR_DIR
        return {
            "noop": fleet_actor(noop, queue_name=QUEUE, actor_name=ACTORS["noop"]),
            "full": fleet_actor(work_through_breaker, queue_name=QUEUE, actor_name=ACTORS["full"],
                                unique=True, service="openai"),
            "probe": fleet_actor(probe, queue_name=QUEUE, actor_name="bench_probe"),
        }
    if side == "bare":
        from dramatiq.brokers.redis import RedisBroker

        dramatiq.set_broker(RedisBroker(url=os.environ["BROKER_URL"]))
        return {
            "noop": dramatiq.actor(noop, queue_name=QUEUE, actor_name=ACTORS["noop"]),
            "full": dramatiq.actor(work, queue_name=QUEUE, actor_name=ACTORS["full"]),
            "probe": dramatiq.actor(probe, queue_name=QUEUE, actor_name="bench_probe"),
        }
    raise SystemExit(f"{SIDE_ENV} must be 'bare' or 'fleet', not {side!r}")


def enqueue(actor: dramatiq.Actor, count: int) -> None:
    """Send `count` messages through the broker's own enqueue (message options, the
    before/after_enqueue middleware, encoding); only the final Redis write, which is what
    Dramatiq's dispatch.lua `enqueue` does (HSET the body, RPUSH the id), is pipelined."""
    broker = actor.broker
    pipe = broker.client.pipeline(transaction=False)
    prefix = f"{broker.namespace}:"

    def write(queue_name: str, redis_message_id: str, data: bytes) -> None:
        pipe.hset(f"{prefix}{queue_name}.msgs", redis_message_id, data)
        pipe.rpush(f"{prefix}{queue_name}", redis_message_id)

    broker.do_enqueue = write
    for n in range(count):
        actor.send(n)
        if (n + 1) % PIPELINE_CHUNK == 0:
            pipe.execute()
    pipe.execute()


def send_probes(actor: dramatiq.Actor, count: int, gap: float) -> None:
    """One probe every `gap` seconds, each through the side's own send."""
    for _ in range(count):
        started = time.monotonic()
        actor.send(time.time())
        time.sleep(max(0.0, gap - (time.monotonic() - started)))


side = os.environ.get(SIDE_ENV)
actors = declare(side) if side else {}

if __name__ == "__main__":
    if not actors:
        raise SystemExit(f"set {SIDE_ENV}=bare|fleet")
    if sys.argv[1] == "probe":
        send_probes(actors["probe"], int(sys.argv[2]), float(sys.argv[3]))
    else:
        enqueue(actors[sys.argv[1]], int(sys.argv[2]))
