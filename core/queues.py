"""Queue depths, read from the broker (dashboard, health, metrics).

Dramatiq's Redis layout (namespace `fleet`): `<q>` is the list of waiting message ids,
`<q>.msgs` holds every message of the queue that is not acked yet (waiting or being
worked on), `<q>.DQ.msgs` the delayed ones (retries, deferrals), `<q>.XQ` the dead letters.

Only known queues are read (those the broker declared, which in a process that imported
`actors.all` is the queue of every actor): four counts a queue in one round trip, never a
SCAN of the keyspace, so the cost does not grow with the number of keys in Redis.
"""
from __future__ import annotations

from dataclasses import dataclass

from dramatiq.brokers.redis import RedisBroker


@dataclass(frozen=True)
class QueueDepth:
    queue: str
    ready: int  # waiting for a worker
    in_flight: int | None  # fetched by a worker, not acked yet (None: unknown on RabbitMQ)
    delayed: int
    dead: int


def known_queues(broker) -> list[str]:
    names = {q for q in broker.get_declared_queues() if not q.endswith((".DQ", ".XQ"))}
    names |= {actor.queue_name for actor in broker.actors.values()}
    return sorted(names)


def _redis_depths(broker: RedisBroker, names: list[str]) -> list[QueueDepth]:
    ns = broker.namespace
    with broker.client.pipeline(transaction=False) as pipe:
        for q in names:
            pipe.llen(f"{ns}:{q}").hlen(f"{ns}:{q}.msgs").hlen(f"{ns}:{q}.DQ.msgs").zcard(f"{ns}:{q}.XQ")
        counts = pipe.execute()
    depths = []
    for i, q in enumerate(names):
        ready, unacked, delayed, dead = counts[4 * i:4 * i + 4]
        depths.append(QueueDepth(q, ready, max(0, unacked - ready), delayed, dead))
    return depths


def queue_depths(broker, also: tuple[str, ...] | list[str] = ()) -> list[QueueDepth]:
    """Every known queue and those in `also` (the queues of live workers, paused ones), by name."""
    names = sorted(set(known_queues(broker)) | set(also))
    if isinstance(broker, RedisBroker):
        return _redis_depths(broker, names)
    depths = []
    for q in names:
        ready, delayed, dead = broker.get_queue_message_counts(q)
        depths.append(QueueDepth(q, ready, None, delayed, dead))
    return depths
