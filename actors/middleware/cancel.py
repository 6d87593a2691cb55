"""Cancelled delayed jobs (core/queued.py) that a worker held until their time: a ticker reads
the cancelled ids every POLL seconds, and such a message is dropped instead of run. Its JobLog
row (`cancelled`) was written by the cancel itself."""
from __future__ import annotations

import logging

from dramatiq.middleware import Middleware, SkipMessage

from actors.middleware.outcome import Outcome, set_outcome
from core.queued import cancelled_ids
from core.state import state_redis
from core.ticker import Ticker

log = logging.getLogger("fleet.cancel")

POLL = 1.0


class Cancellations(Middleware):
    def __init__(self, interval: float = POLL):
        self.interval = interval
        self._cancelled: frozenset[str] = frozenset()
        self._ticker = Ticker("fleet-cancelled", self._read)

    def after_worker_boot(self, broker, worker):
        self._read()
        self._ticker.start(self.interval)

    def before_worker_shutdown(self, broker, worker):
        self._ticker.stop()

    def _read(self) -> None:
        client = state_redis()
        if client is None:
            return
        try:
            self._cancelled = frozenset(cancelled_ids(client))
        except Exception as exc:
            log.warning("cancelled jobs not read", extra={"error": f"{type(exc).__name__}: {exc}"[:300]})

    def before_process_message(self, broker, message):
        if message.message_id in self._cancelled:
            set_outcome(message, Outcome("cancelled"))
            log.info("cancelled job dropped", extra={"message_id": message.message_id})
            raise SkipMessage("cancelled")
