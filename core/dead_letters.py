"""Dramatiq's dead-letter queues: list, requeue, delete, and (on Redis) resolve by a later success.
RabbitMQ's are read in core/dead_letters_rabbitmq.py; why a message died is kept in the state
Redis there, under the same key.

A message lands here when it fails for good (a permanent error, its retry budget spent) or
is not a valid job at all (ERR_INVALID_MESSAGE: not JSON, fields missing, unknown actor;
kept as its raw bytes, cut). Keys: `<namespace>:<queue>.XQ` (Redis ids by time) and
`<namespace>:<queue>.XQ.msgs` (Redis id -> data); `<namespace>:dead-error:<message id>`
why it died; `<namespace>:dead-by-args:<actor>:<digest>` the dead letters of one actor and
arguments, so a later success of the same job can remove them.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.errors import DecodeError
from dramatiq.middleware import MiddlewareError

from core import dead_letters_rabbitmq as rabbitmq
from core.errors import FleetError
from core.state import state_redis

RESET_OPTIONS = ("retries", "error_code", "error", "traceback", "deferrals", "deferred_seconds",
                 "requeue_timestamp", "eta", "redis_message_id", "unique_key")
ERROR_TTL = 7 * 86400  # as long as Dramatiq keeps the dead letter itself
RAW_LIMIT = 4_000  # bytes of an invalid message kept in its dead letter
ACTORS_TTL = 10.0  # seconds a process trusts its list of actors with dead letters


def args_digest(args, kwargs) -> str:
    return hashlib.sha1(json.dumps([args, kwargs], sort_keys=True, default=str).encode()).hexdigest()


def _error_key(broker, message_id: str) -> str:
    return f"{getattr(broker, 'namespace', 'fleet')}:dead-error:{message_id}"


def _error_store(broker):
    """Where why a message died is kept: the broker's Redis, or on RabbitMQ the state Redis (None without one)."""
    return broker.client if isinstance(broker, RedisBroker) else state_redis()


def _index_key(broker: RedisBroker, actor: str, digest: str) -> str:
    return f"{broker.namespace}:dead-by-args:{actor}:{digest}"


def _actors_key(broker: RedisBroker) -> str:
    return f"{broker.namespace}:dead-actors"


def remember_error(broker, message_id: str, code: str, text: str) -> None:
    """Keep why a message died: Dramatiq dead-letters the message as it was enqueued."""
    client = _error_store(broker)
    if client is not None:
        client.set(_error_key(broker, message_id), json.dumps([code, text]), ex=ERROR_TTL)


def forget_error(broker, message_id: str) -> None:
    client = _error_store(broker)
    if client is not None:
        client.delete(_error_key(broker, message_id))


def record(broker, message, code: str, text: str) -> None:
    """Before a message is dead-lettered: why, and under which actor and arguments."""
    if not isinstance(broker, RedisBroker):
        remember_error(broker, message.message_id, code, text)
        return
    index = _index_key(broker, message.actor_name, args_digest(message.args, message.kwargs))
    with broker.client.pipeline() as pipe:
        pipe.set(_error_key(broker, message.message_id), json.dumps([code, text]), ex=ERROR_TTL)
        queue = message.queue_name.removesuffix(".DQ")
        pipe.hset(index, message.options["redis_message_id"], f"{queue} {message.message_id}")
        pipe.expire(index, ERROR_TTL).sadd(_actors_key(broker), message.actor_name)
        pipe.expire(_actors_key(broker), ERROR_TTL).execute()
    _dead_actors.clear()


_dead_actors: dict[str, object] = {}
_dead_actors_lock = threading.Lock()


def may_have_dead_letters(broker, actor: str) -> bool:
    """Cheap check before `resolve`: actors with dead letters, read from Redis every few seconds."""
    if not isinstance(broker, RedisBroker):
        return False
    with _dead_actors_lock:
        if _dead_actors.get("until", 0) < time.monotonic():
            names = {n.decode() for n in broker.client.smembers(_actors_key(broker))}
            _dead_actors.update(until=time.monotonic() + ACTORS_TTL, names=names)
        return actor in _dead_actors["names"]


def resolve(broker, message) -> int:
    """Remove the dead letters of the message's actor and arguments: a later run of the same
    job succeeded, so what they record failing is done. Returns how many were removed."""
    index = _index_key(broker, message.actor_name, args_digest(message.args, message.kwargs))
    entries = broker.client.hgetall(index)
    removed = 0
    for redis_id, where in entries.items():
        queue, message_id = where.decode().split(" ", 1)
        removed += _remove(broker, queue, redis_id, message_id)
    broker.client.delete(index)
    return removed


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
    raw: str | None = None  # the bytes of a message that is not a valid job, cut

    @property
    def requeueable(self) -> bool:
        return self.raw is None


def _redis_broker(broker) -> RedisBroker:
    if not isinstance(broker, RedisBroker):
        raise FleetError(f"dead letters cannot be read on a {type(broker).__name__}")
    return broker


def letter(queue: str, data: bytes, failed_at: datetime) -> DeadLetter:
    """A dead letter from its stored bytes (RabbitMQ's; Redis's are read in bulk by `_letters`)."""
    message_id, message, raw = _decode(b"(not a valid message)", data)
    client = state_redis()
    error = client.get(_error_key(None, message_id)) if client is not None and message is not None else None
    code, text = json.loads(error) if error else (None, None)
    return DeadLetter(message_id, queue, message.actor_name if message else "(not a valid message)",
                      message.args if message else (), message.kwargs if message else {}, code, text, failed_at, raw)


def _dead_queues(broker: RedisBroker) -> list[str]:
    prefix = f"{broker.namespace}:"
    keys = broker.client.scan_iter(match=f"{prefix}*.XQ", count=500)
    return sorted(k.decode()[len(prefix):-3] for k in keys)


def _keys(broker: RedisBroker, queue: str) -> tuple[str, str]:
    base = f"{broker.namespace}:{queue}.XQ"
    return base, base + ".msgs"


def _decode(redis_id: bytes, data: bytes) -> tuple[str, Message | None, str | None]:
    """(message id, message or None, raw text when it is not a valid message)."""
    try:
        message = Message.decode(data)
        return message.message_id, message, None
    except DecodeError:
        return redis_id.decode(), None, data[:RAW_LIMIT].decode("utf-8", errors="replace")


def _letters(broker: RedisBroker, queue: str, redis_ids: list[bytes], scores: list[float]) -> list[DeadLetter]:
    """Dead letters from Redis ids (Dramatiq stores each under an id of its own, not the message id)."""
    _, msgs_key = _keys(broker, queue)
    found = [(rid, data, score) for rid, data, score in zip(redis_ids, broker.client.hmget(msgs_key, redis_ids), scores)
             if data is not None]
    decoded = [_decode(rid, data) for rid, data, _ in found]
    errors = broker.client.mget([_error_key(broker, mid) for mid, _, _ in decoded]) if decoded else []
    letters = []
    for (message_id, message, raw), error, (_, _, score) in zip(decoded, errors, found):
        code, text = json.loads(error) if error else (None, None)
        letters.append(DeadLetter(
            message_id, queue, message.actor_name if message else "(not a valid message)",
            message.args if message else (), message.kwargs if message else {}, code, text,
            datetime.fromtimestamp(score / 1000, timezone.utc), raw))
    return letters


def list_dead_letters(broker, limit: int = 100) -> list[DeadLetter]:
    """The newest dead letters of every queue, newest first."""
    if isinstance(broker, RabbitmqBroker):
        return rabbitmq.list_letters(broker, limit, letter)
    broker = _redis_broker(broker)
    found: list[DeadLetter] = []
    for queue in _dead_queues(broker):
        newest = broker.client.zrevrange(_keys(broker, queue)[0], 0, limit - 1, withscores=True)
        if newest:
            found += _letters(broker, queue, [rid for rid, _ in newest], [score for _, score in newest])
    return sorted(found, key=lambda d: d.failed_at, reverse=True)[:limit]


def matching(broker, wanted: dict[str, str], newest: int) -> list[DeadLetter]:
    """The newest `newest` dead letters whose queue, actor and error code equal those in
    `wanted` (all of them for an empty `wanted`), newest first: what a filtered list shows and
    what its "… matching" actions act on."""
    letters = list_dead_letters(broker, newest)
    return [d for d in letters if all((getattr(d, k) or "") == v for k, v in wanted.items())]


def count_dead_letters(broker) -> int:
    if isinstance(broker, RabbitmqBroker):
        return rabbitmq.count(broker)
    broker = _redis_broker(broker)
    return sum(broker.client.zcard(_keys(broker, q)[0]) for q in _dead_queues(broker))


def _locate(broker: RedisBroker, message_ids: list[str] | None):
    """(queue, redis id, message id, message or None) for the given message ids, or all when
    None; and the ids not found."""
    wanted = None if message_ids is None else set(message_ids)
    located = []
    for queue in _dead_queues(broker):
        for redis_id, data in broker.client.hscan_iter(_keys(broker, queue)[1], count=500):
            message_id, message, _ = _decode(redis_id, data)
            if wanted is None or message_id in wanted:
                located.append((queue, redis_id, message_id, message))
    found = {mid for _, _, mid, _ in located}
    missing = [] if message_ids is None else [m for m in message_ids if m not in found]
    return located, missing


def _remove(broker: RedisBroker, queue: str, redis_id: bytes | str, message_id: str) -> int:
    ids_key, msgs_key = _keys(broker, queue)
    with broker.client.pipeline() as pipe:
        removed, *_ = pipe.zrem(ids_key, redis_id).hdel(msgs_key, redis_id).delete(_error_key(broker, message_id)).execute()
    return removed


@dataclass
class Requeued:
    requeued: int
    in_flight: int  # the same job was queued or running already: the dead letter is dropped
    invalid: int  # not a valid message: cannot be sent again (delete it)
    missing: list[str]


def requeue(broker, message_ids: list[str] | None) -> Requeued:
    """Send dead letters again with a fresh retry budget, through the same unique check as
    any send (the broker must have the actors declared: import `actors.all` first)."""
    if isinstance(broker, RabbitmqBroker):
        result = Requeued(0, 0, 0, [])
        rabbitmq.requeue(broker, message_ids, result, _send_again, letter, forget_error)
        return result
    broker = _redis_broker(broker)
    located, missing = _locate(broker, message_ids)
    result = Requeued(0, 0, 0, missing)
    for queue, redis_id, message_id, message in located:
        if message is None:
            result.invalid += 1
            continue
        _send_again(broker, queue, message, result)
        _remove(broker, queue, redis_id, message_id)
    return result


def _send_again(broker, queue: str, message: Message, result: Requeued) -> None:
    """A dead letter's message to its queue under its id, with a fresh retry budget."""
    options = {k: v for k, v in message.options.items() if k not in RESET_OPTIONS}
    try:
        broker.enqueue(Message(queue_name=queue, actor_name=message.actor_name, args=message.args,
                               kwargs=message.kwargs, options=options, message_id=message.message_id,
                               message_timestamp=message.message_timestamp))
        result.requeued += 1
    except MiddlewareError:  # a unique job already queued or running does the same work
        result.in_flight += 1


def delete(broker, message_ids: list[str] | None) -> tuple[int, list[str]]:
    if isinstance(broker, RabbitmqBroker):
        return rabbitmq.delete(broker, message_ids, letter, forget_error)
    broker = _redis_broker(broker)
    located, missing = _locate(broker, message_ids)
    for queue, redis_id, message_id, _ in located:
        _remove(broker, queue, redis_id, message_id)
    return len(located), missing


def find_dead_letter(broker, message_id: str) -> DeadLetter | None:
    """One dead letter by its message id (a scan of the dead-letter hashes, not of the keyspace)."""
    if isinstance(broker, RabbitmqBroker):
        return rabbitmq.find(broker, message_id, letter)
    broker = _redis_broker(broker)
    located, _ = _locate(broker, [message_id])
    if not located:
        return None
    queue, redis_id, _, _ = located[0]
    score = broker.client.zscore(_keys(broker, queue)[0], redis_id) or 0
    return _letters(broker, queue, [redis_id], [score])[0]
