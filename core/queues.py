"""Queue depths, read from the broker (dashboard, health, metrics).

Dramatiq's Redis layout (namespace `fleet`): `<q>` is the list of waiting message ids,
`<q>.msgs` holds every message of the queue that is not acked yet (waiting or being
worked on), `<q>.DQ.msgs` the delayed ones (retries, deferrals), `<q>.XQ` the dead letters.

Only known queues are read (those the broker declared, which in a process that imported
`actors.all` is the queue of every actor): four counts a queue in one round trip, never a
SCAN of the keyspace, so the cost does not grow with the number of keys in Redis.

On RabbitMQ the ready, delayed and dead counts come from AMQP (a declare answers with the
queue's count of ready messages); the messages in flight (delivered, not acked) only from
the management API, read when FLEET_RABBITMQ_MANAGEMENT_URL names it, else unknown (None).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import quote, urlparse

from dramatiq.brokers.redis import RedisBroker

MANAGEMENT_TIMEOUT = 3.0  # seconds the management API may take
NO_MANAGEMENT = "unknown on RabbitMQ without its management API (set FLEET_RABBITMQ_MANAGEMENT_URL)"
log = logging.getLogger("fleet.queues")


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


def rabbitmq_in_flight(management_url: str, broker_url: str) -> dict[str, int]:
    """Messages delivered and not acked, by queue, from RabbitMQ's management API (one request)."""
    import requests

    vhost = urlparse(broker_url).path.lstrip("/") or "/"
    parsed = urlparse(management_url)
    auth = (parsed.username or "", parsed.password or "") if parsed.username else None
    base = parsed._replace(netloc=parsed.hostname + (f":{parsed.port}" if parsed.port else "")).geturl().rstrip("/")
    response = requests.get(f"{base}/api/queues/{quote(vhost, safe='')}", auth=auth, timeout=MANAGEMENT_TIMEOUT,
                            params={"columns": "name,messages_unacknowledged"})
    response.raise_for_status()
    return {q["name"]: int(q.get("messages_unacknowledged") or 0) for q in response.json()}


def _in_flight(broker) -> dict[str, int] | None:
    from core.settings import get_settings

    settings = get_settings()
    if not settings.rabbitmq_management_url:
        return None
    try:
        return rabbitmq_in_flight(settings.rabbitmq_management_url, settings.broker_url)
    except Exception as exc:
        log.warning("RabbitMQ's management API did not answer: in-flight counts unknown", extra={"error": str(exc)[:200]})
        return None


def queue_depths(broker, also: tuple[str, ...] | list[str] = ()) -> list[QueueDepth]:
    """Every known queue and those in `also` (the queues of live workers, paused ones), by name."""
    names = sorted(set(known_queues(broker)) | set(also))
    if isinstance(broker, RedisBroker):
        return _redis_depths(broker, names)
    in_flight = _in_flight(broker)
    depths = []
    for q in names:
        ready, delayed, dead = broker.get_queue_message_counts(q)
        depths.append(QueueDepth(q, ready, None if in_flight is None else in_flight.get(q, 0), delayed, dead))
    return depths
