"""Queue depths and live workers, read from the broker (dashboard, health, metrics).

Dramatiq's Redis layout (namespace `fleet`): `<q>` is the list of waiting message ids,
`<q>.msgs` holds every message of the queue that is not acked yet (waiting or being
worked on), `<q>.DQ.msgs` the delayed ones (retries, deferrals), `<q>.XQ` the dead
letters, `__heartbeats__` a zset of broker ids by their last call (ms).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from dramatiq.brokers.redis import RedisBroker


@dataclass(frozen=True)
class QueueDepth:
    queue: str
    ready: int  # waiting for a worker
    in_flight: int | None  # fetched by a worker, not acked yet (None: unknown on RabbitMQ)
    delayed: int
    dead: int


@dataclass(frozen=True)
class LiveWorker:
    broker_id: str
    seconds_ago: float


def _redis_queue_names(broker: RedisBroker) -> set[str]:
    prefix = f"{broker.namespace}:"
    names = {q for q in broker.get_declared_queues() if not q.endswith(".DQ")}
    for pattern in ("*.msgs", "*.XQ"):
        for key in broker.client.scan_iter(match=prefix + pattern, count=1000):
            name = key.decode()[len(prefix):]
            for suffix in (".msgs", ".XQ", ".DQ"):
                name = name.removesuffix(suffix)
            if not name.startswith("__"):
                names.add(name)
    return names


def _redis_depths(broker: RedisBroker) -> list[QueueDepth]:
    names = sorted(_redis_queue_names(broker))
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


def queue_depths(broker) -> list[QueueDepth]:
    """Every queue the broker knows, by name."""
    if isinstance(broker, RedisBroker):
        return _redis_depths(broker)
    depths = []
    for q in sorted(broker.get_declared_queues()):
        if q.endswith((".DQ", ".XQ")):
            continue
        ready, delayed, dead = broker.get_queue_message_counts(q)
        depths.append(QueueDepth(q, ready, None, delayed, dead))
    return depths


def live_workers(broker, within_seconds: float) -> list[LiveWorker] | None:
    """Processes that polled the Redis broker within the window, newest first (None on RabbitMQ).

    The panel's own broker is left out: it only sends, and sending refreshes a heartbeat too.
    """
    if not isinstance(broker, RedisBroker):
        return None
    now_ms = time.time() * 1000
    rows = broker.client.zrevrangebyscore(f"{broker.namespace}:__heartbeats__", "+inf",
                                          now_ms - within_seconds * 1000, withscores=True)
    return [LiveWorker(member.decode(), max(0.0, (now_ms - score) / 1000)) for member, score in rows
            if member.decode() != broker.broker_id]
