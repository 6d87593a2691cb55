"""A worker that loses the database or Redis stops fetching until they answer again.

A job that fails because the database or Redis is away (or refuses writes: Redis out of memory)
waits without spending a retry (`core.errors.is_outage`, `retries.BackoffRetries`); without more,
every worker thread would go on fetching messages only to wait out the same outage, each meeting
a connection timeout. So the first such failure makes this process look (a `SELECT 1` and a
Redis write that expires); while the look fails, its consumers are paused (Dramatiq's
`ConsumerThread.pause`, and `core.broker.pause_fetching` so that a consumer with a backlog stops
too: no fetch, the messages they had prefetched go back to their queue) and
the look is repeated every fifth of FLEET_OUTAGE_WAIT; the first look that succeeds resumes
them. One line is logged when the process pauses and one when it resumes.

Messages already handed to worker threads run on: each meets the outage and waits as above (if
Redis itself is away its deferral cannot be enqueued: the message stays unacked and is settled
once Redis is back, see `settle.py`).
"""
from __future__ import annotations

import logging
import threading
import time

from dramatiq.middleware import Middleware

from actors.middleware.pauses import held_for_operator
from core.broker import pause_fetching
from core.errors import classify, is_outage
from core.settings import get_settings
from core.state import state_redis
from core.ticker import Ticker
from db.database import database, release_connection

log = logging.getLogger("fleet.outages")

PROBE_KEY = "fleet:outage-probe:{}"  # a write Redis must accept, expiring at once


def probe(broker) -> str | None:
    """Why this process cannot work now ("database: …", "Redis: …"), or None when both answer."""
    try:
        database.connect(reuse_if_open=True)
        database.execute_sql("SELECT 1").fetchall()
    except Exception as exc:
        return classify(exc).message
    finally:
        release_connection()
    clients = [c for c in (getattr(broker, "client", None), state_redis()) if c is not None]
    try:
        for client in {id(c): c for c in clients}.values():
            client.set(PROBE_KEY.format(getattr(broker, "broker_id", "")), "1", px=1000)
    except Exception as exc:
        return classify(exc).message
    return None


class _QuietWhilePaused(logging.Filter):
    def __init__(self, pause: OutagePause):
        super().__init__()
        self.pause = pause

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self.pause.paused and str(record.msg).startswith("Restarting consumer"))


class OutagePause(Middleware):
    def __init__(self):
        self._worker = None
        self._broker = None
        self._ticker: Ticker | None = None
        self._suspect = threading.Event()  # a job met an outage: look at the next tick
        self._paused_at: float | None = None  # monotonic
        self._lock = threading.Lock()

    @property
    def paused(self) -> bool:
        return self._paused_at is not None

    def after_worker_boot(self, broker, worker):
        self._worker, self._broker = worker, broker
        if self._ticker is not None:
            self._ticker.stop()
        self._ticker = Ticker("fleet-outages", self.look)
        self._ticker.start(max(0.1, get_settings().outage_wait / 5))

    def before_worker_shutdown(self, broker, worker):
        if self._ticker is not None:
            self._ticker.stop()
        if self.paused:  # a worker of this process started later fetches from the start
            self._paused_at = None
            pause_fetching(False)

    def after_process_message(self, broker, message, *, result=None, exception=None):
        if exception is not None and not self.paused and is_outage(exception):
            self._suspect.set()

    def look(self) -> None:
        """One tick: look while an outage is suspected or the consumers are paused."""
        if not (self.paused or self._suspect.is_set()):
            return
        with self._lock:
            self._suspect.clear()
            try:
                reason = probe(self._broker)
            except Exception as exc:  # a bug in the look must not end the ticker
                log.warning("outage probe failed", extra={"error": str(exc)[:200]})
                return
            if reason and not self.paused:
                self._pause(reason)
            elif reason is None and self.paused:
                self._resume()

    def _quiet(self, consumer) -> None:
        """Dramatiq logs each paused consumer's restart; the pause has its own line."""
        if not any(isinstance(f, _QuietWhilePaused) for f in consumer.logger.filters):
            consumer.logger.addFilter(_QuietWhilePaused(self))

    def _consumers(self) -> list:
        return list(getattr(self._worker, "consumers", {}).values()) if self._worker is not None else []

    def _pause(self, reason: str) -> None:
        self._paused_at = time.monotonic()
        pause_fetching()
        for consumer in self._consumers():
            self._quiet(consumer)
            consumer.pause()
        log.warning("worker paused: it fetches no job until the database and Redis answer again",
                    extra={"reason": reason[:300]})

    def _resume(self) -> None:
        paused_for = time.monotonic() - (self._paused_at or time.monotonic())
        self._paused_at = None
        pause_fetching(False)
        for consumer in self._consumers():
            if not held_for_operator(consumer):  # a queue an operator paused stays paused
                consumer.resume()
        log.warning("worker resumed: the database and Redis answer again",
                    extra={"paused_seconds": round(paused_for, 1)})
