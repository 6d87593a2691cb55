"""Paused queues: workers stop fetching from them until they are resumed.

The database holds the paused queues (so a pause outlives a restart of Redis or of every
process); Redis holds a copy that each worker process reads every second. The copy is taken
again from the database by whoever reads it after `LOADED_KEY` expired, so a Redis that came
back empty, or a copy written in a race with a pause, is right again within MIRROR_TTL seconds.
"""
from __future__ import annotations

import logging

from core.state import state_redis
from db.models import utcnow
from db.models.jobs import PausedQueue

log = logging.getLogger("fleet.pauses")

PAUSED_KEY = "fleet:queues:paused"
LOADED_KEY = "fleet:queues:paused:loaded"
MIRROR_TTL = 30  # seconds a copy is trusted before it is taken from the database again
RETRY_TTL = 5  # seconds before a database that did not answer is asked again


def _from_database() -> set[str]:
    return {row.queue for row in PausedQueue.select(PausedQueue.queue)}


def _mirror(client) -> set[str]:
    names = _from_database()
    with client.pipeline() as pipe:  # MULTI: a reader never sees the set half written
        pipe.delete(PAUSED_KEY)
        if names:
            pipe.sadd(PAUSED_KEY, *sorted(names))
        pipe.set(LOADED_KEY, "1", ex=MIRROR_TTL)
        pipe.execute()
    return names


def paused_queues() -> set[str]:
    """The names of the paused queues: Redis's copy, taken from the database when it is older
    than MIRROR_TTL or gone; the copy as it is while the database does not answer."""
    client = state_redis()
    if client is None:
        return _from_database()
    with client.pipeline() as pipe:  # MULTI: the flag and the set of one moment
        loaded, members = pipe.exists(LOADED_KEY).smembers(PAUSED_KEY).execute()
    names = {m.decode() if isinstance(m, bytes) else m for m in members}
    if loaded:
        return names
    try:
        return _mirror(client)
    except Exception as exc:
        log.warning("paused queues not read from the database; Redis's copy used",
                    extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
        client.set(LOADED_KEY, "1", ex=RETRY_TTL)  # the copy as it is for a while: no warning a second
        return names


def paused_since() -> dict[str, PausedQueue]:
    """Every paused queue's row (who paused it, when), from the database."""
    return {row.queue: row for row in PausedQueue.select()}


def pause(queue: str, who: str) -> bool:
    """Pause `queue`; False when it was paused already."""
    if PausedQueue.get_or_none(PausedQueue.queue == queue) is not None:
        _publish()
        return False
    PausedQueue.insert(queue=queue, paused_by=who, paused_at=utcnow()).on_conflict_ignore().execute()
    _publish()
    return True


def resume(queue: str) -> bool:
    """Resume `queue`; False when it was not paused."""
    deleted = PausedQueue.delete().where(PausedQueue.queue == queue).execute()
    _publish()
    return bool(deleted)


def _publish() -> None:
    client = state_redis()
    if client is not None:
        _mirror(client)
