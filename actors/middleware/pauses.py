"""Paused queues (core/pauses.py) in a worker process: a ticker reads the paused set every
POLL seconds and pauses or resumes the consumer of each queue; a consumer that starts (a worker
that boots, a queue declared later) is paused before its first fetch if its queue is paused.

A queue's delay consumer keeps running: retries and deferrals that fall due are moved onto their
queue, and wait there with the rest until it is resumed.
"""
from __future__ import annotations

import logging
import weakref

from dramatiq.common import q_name
from dramatiq.middleware import Middleware

from core.pauses import paused_queues
from core.ticker import Ticker
from db.database import release_connection

log = logging.getLogger("fleet.pauses")

POLL = 1.0  # seconds between reads of the paused set

_held: weakref.WeakSet = weakref.WeakSet()  # consumer threads held back for an operator's pause


def held_for_operator(consumer) -> bool:
    """Is this consumer paused because an operator paused its queue? (Whoever else pauses
    consumers, an outage say, leaves it paused when they resume the rest.)"""
    return consumer in _held


def _read() -> set[str] | None:
    try:
        return paused_queues()
    except Exception as exc:
        log.warning("paused queues not read; consumers stay as they are",
                    extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
        return None
    finally:
        release_connection()


def _hold(consumer) -> None:
    _held.add(consumer)
    consumer.pause()
    # Dramatiq's consumer thread notices a pause only when a fetch comes back empty; with a
    # prefetch of 0 its Redis consumer hands out what it holds already and then fetches nothing.
    inner = getattr(consumer, "consumer", None)
    if inner is not None and hasattr(inner, "message_cache") and hasattr(inner, "prefetch"):
        inner.prefetch = 0


class QueuePauses(Middleware):
    def __init__(self, interval: float = POLL):
        self.interval = interval
        self._worker = None
        self._ticker = Ticker("fleet-pauses", self._apply)

    def after_worker_boot(self, broker, worker):
        self._worker = worker
        self._ticker.start(self.interval)

    def before_worker_shutdown(self, broker, worker):
        self._ticker.stop()

    def after_consumer_thread_boot(self, broker, thread):
        name = thread.queue_name
        if name == q_name(name) and name in (_read() or ()):
            _hold(thread)
            log.info("queue paused: not fetching from it", extra={"queue": name})

    def _apply(self) -> None:
        paused = _read()
        if paused is None or self._worker is None:
            return
        for name, consumer in list(self._worker.consumers.items()):
            if name != q_name(name):
                continue  # a delay queue
            if name in paused and consumer not in _held:
                _hold(consumer)
                log.info("queue paused: not fetching from it", extra={"queue": name})
            elif name not in paused and consumer in _held:  # only what it paused, not another's pause
                _held.discard(consumer)
                consumer.resume()
                log.info("queue resumed", extra={"queue": name})
