"""The no-op work that benchmarks/batches.py measures, as plain messages and as batch items.

`python -m dramatiq batch_bench_actors --path benchmarks` imports this module in each worker
process (it boots Fleet and declares every actor, plus these two).
"""
from __future__ import annotations

from actors.all import *  # noqa: F401,F403
from actors.batches import ItemRun, batch_kind
from actors.runtime import fleet_actor

QUEUE = "bench"
KIND = "bench_noop"


@fleet_actor(queue_name=QUEUE, actor_name="bench_plain_noop")
def plain_noop(n: int) -> None:
    """One item's work sent as a plain message: nothing."""


@batch_kind(KIND, label="Benchmark no-op", queue_name=QUEUE)
def batch_noop(run: ItemRun) -> None:
    """One item's work as a batch item: nothing (the benchmark measures the ledger)."""
