"""Dramatiq's dead-letter queues on RabbitMQ (`<queue>.XQ`): listed, requeued and deleted.

A rejected message is dead-lettered by RabbitMQ itself into `<queue>.XQ` with its body as it
was enqueued and an `x-death` header (when). The queue is read with `basic.get` on a channel
of its own without acknowledging: what is only looked at goes back to the queue when that
channel closes; a requeued or deleted letter is acknowledged (gone from the XQ) once its new
copy is published. Why a message died is kept in the state Redis by message id, as on Redis.

core/dead_letters.py calls these with its `letter` (a DeadLetter from stored bytes) and
`forget_error`. An AMQP queue is read from its oldest message: a listing shows the oldest BROWSE_LIMIT
letters of each queue, newest first; a requeue or delete by id looks at as many.
"""
from __future__ import annotations

import contextlib
from datetime import datetime, timezone

from dramatiq import Message
from dramatiq.common import xq_name

BROWSE_LIMIT = 10_000  # messages of one dead-letter queue looked at by a call


def _failed_at(properties) -> datetime:
    deaths = (properties.headers or {}).get("x-death") or []
    when = deaths[0].get("time") if deaths else None
    if isinstance(when, datetime):
        return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    return datetime.fromtimestamp(0, timezone.utc)


@contextlib.contextmanager
def _browsing(broker, queue: str, limit: int):
    """(channel, [(delivery tag, properties, body)]) of the queue's dead letters, unacknowledged:
    the ones the caller does not ack go back when the channel closes."""
    channel = broker.connection.channel()
    try:
        got = []
        while len(got) < limit:
            method, properties, body = channel.basic_get(xq_name(queue), auto_ack=False)
            if method is None:
                break
            got.append((method.delivery_tag, properties, body))
        yield channel, got
    finally:
        if channel.is_open:
            channel.close()


def _queues(broker) -> list[str]:
    from core.queues import known_queues

    return known_queues(broker)


def list_letters(broker, limit: int, letter) -> list:
    found = []
    for queue in _queues(broker):
        with _browsing(broker, queue, min(BROWSE_LIMIT, max(limit, 1) * 10)) as (_, got):
            found += [letter(queue, body, _failed_at(properties)) for _, properties, body in got]
    return sorted(found, key=lambda d: d.failed_at, reverse=True)[:limit]


def count(broker) -> int:
    return sum(broker.get_queue_message_counts(queue)[2] for queue in _queues(broker))


def find(broker, message_id: str, letter):
    for queue in _queues(broker):
        with _browsing(broker, queue, BROWSE_LIMIT) as (_, got):
            for _, properties, body in got:
                found = letter(queue, body, _failed_at(properties))
                if found.message_id == message_id:
                    return found
    return None


def _each(broker, message_ids: list[str] | None, letter, act) -> list[str]:
    """`act(queue, body, dead letter)` for each wanted letter, acked when `act` returns True;
    the ids not found."""
    wanted = None if message_ids is None else set(message_ids)
    found = set()
    for queue in _queues(broker):
        with _browsing(broker, queue, BROWSE_LIMIT) as (channel, got):
            for tag, properties, body in got:
                dead = letter(queue, body, _failed_at(properties))
                if wanted is not None and dead.message_id not in wanted:
                    continue
                found.add(dead.message_id)
                if act(queue, body, dead):
                    channel.basic_ack(tag)
    return [] if wanted is None else sorted(wanted - found)


def requeue(broker, message_ids: list[str] | None, result, send_again, letter, forget_error) -> None:
    """`send_again(broker, queue, message, result)` sends each requeueable letter (core.dead_letters)."""
    def again(queue, body, dead) -> bool:
        if not dead.requeueable:
            result.invalid += 1
            return False
        send_again(broker, queue, Message.decode(body), result)
        forget_error(broker, dead.message_id)
        return True

    result.missing = _each(broker, message_ids, letter, again)


def delete(broker, message_ids: list[str] | None, letter, forget_error) -> tuple[int, list[str]]:
    deleted = 0

    def drop(queue, body, dead) -> bool:
        nonlocal deleted
        deleted += 1
        forget_error(broker, dead.message_id)
        return True

    missing = _each(broker, message_ids, letter, drop)
    return deleted, missing
