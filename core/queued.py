"""Cancelling a job that has not started: a message waiting in its queue, or in its delay queue
(a retry, a deferral, a delayed send), found by its message id.

A waiting message is taken out of Redis (atomically, so no worker fetches it meanwhile). A delayed
message a worker already holds until its time cannot be taken back from that worker: its id goes
into CANCELLED_KEY, which every worker reads each second, and the worker drops it when it falls
due. A message a worker fetched from the queue itself is running, or about to: it is not cancelled.

Dramatiq stores each message under a Redis id of its own, so finding one means scanning the
message hashes of the known queues (an operator's rare action, not a job's).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import dq_name

from core.errors import FleetError
from core.lua import lua
from core.state import state_redis

CANCELLED_KEY = "fleet:cancelled"  # sorted set: message id -> unix time until which it is kept
CANCELLED_TTL = 8 * 86400  # longer than Dramatiq's longest delay (7 days)
SCAN_COUNT = 1_000
_TAKE = lua(__file__, "queued_take")


@dataclass(frozen=True)
class Cancelled:
    message: Message
    held: bool  # a worker holds it until its time: it is dropped then, not taken out now


class NotCancellable(FleetError):
    """The message is running (or fetched for running), or is not waiting anywhere."""


def _redis_broker(broker) -> RedisBroker:
    if not isinstance(broker, RedisBroker):
        raise FleetError("queued jobs can be cancelled on the Redis broker only")
    return broker


def _find(broker: RedisBroker, message_id: str, queues: list[str]):
    """(list key, hash key, Redis id, message) of the message, or None."""
    needle = message_id.encode()
    for queue in queues:
        for name in (queue, dq_name(queue)):
            list_key, hash_key = f"{broker.namespace}:{name}", f"{broker.namespace}:{name}.msgs"
            for redis_id, data in broker.client.hscan_iter(hash_key, count=SCAN_COUNT):
                if needle in data:
                    message = Message.decode(data)
                    if message.message_id == message_id:
                        return list_key, hash_key, redis_id, message
    return None


def cancel(broker, message_id: str, queues: list[str]) -> Cancelled:
    """Cancel a waiting or delayed message, looked for in `queues` (and their delay queues) in order."""
    broker = _redis_broker(broker)
    found = _find(broker, message_id, queues)
    if found is None:
        raise NotCancellable(f"no queued or delayed job with message id {message_id} "
                             "(it ran, failed for good, or was cancelled already)")
    list_key, hash_key, redis_id, message = found
    if _TAKE(broker.client, keys=[list_key, hash_key], args=[redis_id]):
        return Cancelled(message, held=False)
    if not list_key.endswith(".DQ"):
        raise NotCancellable(f"message {message_id} was fetched by a worker: it is running or about to run, "
                             "and a running job cannot be cancelled")
    mark_cancelled(message_id)
    return Cancelled(message, held=True)


def mark_cancelled(message_id: str) -> None:
    client = state_redis()
    if client is None:
        raise FleetError("a delayed job a worker holds can be cancelled only with a state Redis")
    now = time.time()
    with client.pipeline() as pipe:
        pipe.zadd(CANCELLED_KEY, {message_id: now + CANCELLED_TTL}).zremrangebyscore(CANCELLED_KEY, "-inf", now)
        pipe.execute()


def cancelled_ids(client) -> set[str]:
    """The message ids workers must drop (read by each worker every second)."""
    return {m.decode() for m in client.zrangebyscore(CANCELLED_KEY, time.time(), "+inf")}
