"""Dramatiq's dead-letter queues on Redis: list, requeue, delete.

A message lands here when it fails for good (non-retryable, or its retry budget spent).
Keys: `<namespace>:<queue>.XQ` (ids by time) and `<namespace>:<queue>.XQ.msgs` (id -> data).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker

from core.errors import FleetError

RESET_OPTIONS = ("retries", "error_code", "error", "traceback", "deferrals", "requeue_timestamp", "eta")
ERROR_TTL = 7 * 86400  # as long as Dramatiq keeps the dead letter itself


def _error_key(broker: RedisBroker, message_id: str) -> str:
    return f"{broker.namespace}:dead-error:{message_id}"


def remember_error(broker, message_id: str, code: str, text: str) -> None:
    """Keep why a message died: Dramatiq dead-letters the message as it was enqueued."""
    if isinstance(broker, RedisBroker):
        broker.client.set(_error_key(broker, message_id), json.dumps([code, text]), ex=ERROR_TTL)


@dataclass
class DeadLetter:
    message_id: str
    queue: str
    actor: str
    args: tuple
    kwargs: dict
    error_code: str | None
    error: str | None
    failed_at: datetime


def _redis_broker(broker) -> RedisBroker:
    if not isinstance(broker, RedisBroker):
        raise FleetError("dead letters can be listed and requeued on the Redis broker only; with RabbitMQ use its management UI (queues ending in .XQ)")
    return broker


def _dead_queues(broker: RedisBroker) -> list[str]:
    prefix = f"{broker.namespace}:"
    keys = broker.client.scan_iter(match=f"{prefix}*.XQ", count=500)
    return sorted(k.decode()[len(prefix):-3] for k in keys)


def _keys(broker: RedisBroker, queue: str) -> tuple[str, str]:
    base = f"{broker.namespace}:{queue}.XQ"
    return base, base + ".msgs"


def _letters(broker: RedisBroker, queue: str, redis_ids: list[bytes], scores: list[float]) -> list[DeadLetter]:
    """Dead letters from Redis ids (Dramatiq stores each under an id of its own, not the message id)."""
    _, msgs_key = _keys(broker, queue)
    messages = [Message.decode(d) for d in broker.client.hmget(msgs_key, redis_ids) if d]
    errors = broker.client.mget([_error_key(broker, m.message_id) for m in messages]) if messages else []
    letters = []
    for message, error, score in zip(messages, errors, scores):
        code, text = json.loads(error) if error else (None, None)
        letters.append(DeadLetter(message.message_id, queue, message.actor_name, message.args, message.kwargs,
                                  code, text, datetime.fromtimestamp(score / 1000, timezone.utc)))
    return letters


def list_dead_letters(broker, limit: int = 100) -> list[DeadLetter]:
    """The newest dead letters of every queue, newest first."""
    broker = _redis_broker(broker)
    found: list[DeadLetter] = []
    for queue in _dead_queues(broker):
        newest = broker.client.zrevrange(_keys(broker, queue)[0], 0, limit - 1, withscores=True)
        if newest:
            found += _letters(broker, queue, [rid for rid, _ in newest], [score for _, score in newest])
    return sorted(found, key=lambda d: d.failed_at, reverse=True)[:limit]


def count_dead_letters(broker) -> int:
    broker = _redis_broker(broker)
    return sum(broker.client.zcard(_keys(broker, q)[0]) for q in _dead_queues(broker))


def _locate(broker: RedisBroker, message_ids: list[str] | None):
    """(queue, redis id, message) for the given message ids, or all when None; and the ids not found."""
    wanted = None if message_ids is None else set(message_ids)
    located = []
    for queue in _dead_queues(broker):
        for redis_id, data in broker.client.hscan_iter(_keys(broker, queue)[1], count=500):
            message = Message.decode(data)
            if wanted is None or message.message_id in wanted:
                located.append((queue, redis_id, message))
    found = {m.message_id for _, _, m in located}
    missing = [] if message_ids is None else [m for m in message_ids if m not in found]
    return located, missing


def _remove(broker: RedisBroker, queue: str, redis_id: bytes, message_id: str) -> None:
    ids_key, msgs_key = _keys(broker, queue)
    with broker.client.pipeline() as pipe:
        pipe.zrem(ids_key, redis_id).hdel(msgs_key, redis_id).delete(_error_key(broker, message_id)).execute()


def requeue(broker, message_ids: list[str] | None) -> tuple[int, list[str]]:
    """Send dead letters again with a fresh retry budget; returns (requeued, ids not found)."""
    broker = _redis_broker(broker)
    located, missing = _locate(broker, message_ids)
    for queue, redis_id, message in located:
        options = {k: v for k, v in message.options.items() if k not in RESET_OPTIONS and k != "redis_message_id"}
        broker.enqueue(Message(queue_name=queue, actor_name=message.actor_name, args=message.args,
                               kwargs=message.kwargs, options=options, message_id=message.message_id,
                               message_timestamp=message.message_timestamp))
        _remove(broker, queue, redis_id, message.message_id)
    return len(located), missing


def delete(broker, message_ids: list[str] | None) -> tuple[int, list[str]]:
    broker = _redis_broker(broker)
    located, missing = _locate(broker, message_ids)
    for queue, redis_id, message in located:
        _remove(broker, queue, redis_id, message.message_id)
    return len(located), missing


def find_dead_letter(broker, message_id: str) -> DeadLetter | None:
    """One dead letter by its message id (a scan of the dead-letter hashes, not of the keyspace)."""
    broker = _redis_broker(broker)
    located, _ = _locate(broker, [message_id])
    if not located:
        return None
    queue, redis_id, _ = located[0]
    score = broker.client.zscore(_keys(broker, queue)[0], redis_id) or 0
    return _letters(broker, queue, [redis_id], [score])[0]
