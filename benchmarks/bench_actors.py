"""The no-op actor that benchmarks/throughput.py measures, bare or under Fleet.

`FLEET_BENCH_SIDE` (set by throughput.py) says which broker it is declared on:

    bare   RedisBroker(url=BROKER_URL) with Dramatiq's default middleware
    fleet  actors.runtime.boot(): Fleet's broker, all of Fleet's middleware (JobLog on)

`python -m dramatiq bench_actors --path benchmarks` imports this module in each worker
process; `python benchmarks/bench_actors.py N` enqueues N messages for the worker to eat.
"""
from __future__ import annotations

import os
import sys

import dramatiq

SIDE_ENV = "FLEET_BENCH_SIDE"
QUEUE = "bench"
ACTOR = "bench_noop"
NAMESPACES = {"bare": "dramatiq", "fleet": "fleet"}  # Redis key prefix of each side's broker
PIPELINE_CHUNK = 1_000


def noop(n: int) -> None:
    """Does nothing: the benchmark measures the job system, not the job."""


def declare(side: str) -> dramatiq.Actor:
    if side == "fleet":
        from actors.runtime import boot, fleet_actor

        boot()  # settings from BROKER_URL, DATABASE_URL, FLEET_VAR_DIR
        return fleet_actor(noop, queue_name=QUEUE, actor_name=ACTOR)
    if side == "bare":
        from dramatiq.brokers.redis import RedisBroker

        dramatiq.set_broker(RedisBroker(url=os.environ["BROKER_URL"]))
        return dramatiq.actor(noop, queue_name=QUEUE, actor_name=ACTOR)
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


side = os.environ.get(SIDE_ENV)
noop_actor = declare(side) if side else None

if __name__ == "__main__":
    if noop_actor is None:
        raise SystemExit(f"set {SIDE_ENV}=bare|fleet")
    enqueue(noop_actor, int(sys.argv[1]))
