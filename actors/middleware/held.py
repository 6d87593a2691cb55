"""Gives back what a live worker's ack sets hold but the worker itself no longer does (Redis).

Dramatiq's Redis broker adds every message a worker fetches to that worker's ack set
(`<ns>:__acks__.<broker id>.<queue>`) until it is acked; maintenance moves them back to
their queue only once the worker's heartbeat has stopped. A live worker can lose messages
from memory while they stay in its ack set: Dramatiq's consumer thread, on a connection
error, drops the delayed messages it holds and the ones it fetched but had not handed out
yet. Those would wait for the worker's restart. Here a thread of each worker process looks
every third of the heartbeat timeout: an id in an ack set that the process held on neither
of two looks in a row goes back to its queue (Dramatiq's own `requeue` script), so it
comes back within the heartbeat timeout.
"""
from __future__ import annotations

import logging

from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.errors import DecodeError
from dramatiq.middleware import Middleware

from core.ticker import Ticker

log = logging.getLogger("fleet.held")


def _redis_id(message) -> str | None:
    return message.options.get("redis_message_id")


class HeldMessages(Middleware):
    def __init__(self):
        self._processing: set[str] = set()  # Redis ids between the start of processing and the ack
        self._ticker: Ticker | None = None

    def after_worker_boot(self, broker, worker):
        if not isinstance(broker, RedisBroker):
            return
        if self._ticker is not None:
            self._ticker.stop()
        self._ticker = Ticker("fleet-held", self._watch(broker, worker))
        self._ticker.start(max(0.5, broker.heartbeat_timeout / 1000 / 3))

    def before_worker_shutdown(self, broker, worker):
        if self._ticker is not None:
            self._ticker.stop()

    def before_process_message(self, broker, message):
        self._processing.add(_redis_id(message))

    def before_ack(self, broker, message):
        self._processing.add(_redis_id(message))  # a delayed message being moved to its queue

    before_nack = before_ack

    def after_ack(self, broker, message):
        self._processing.discard(_redis_id(message))

    after_nack = after_ack

    def held(self, worker) -> set[str]:
        """Redis ids this process holds: being processed, waiting for a worker thread, delayed
        in a consumer, or fetched and not handed out yet."""
        ids = set(self._processing)
        ids.update(_redis_id(item.message) for item in list(worker.work_queue.queue))
        for thread in list(worker.consumers.values()):
            ids.update(_redis_id(item.message) for item in list(thread.delay_queue.queue))
            for data in list(getattr(thread.consumer, "message_cache", None) or []):
                try:
                    ids.add(_redis_id(Message.decode(data)))
                except DecodeError:
                    pass
        return ids

    def _watch(self, broker: RedisBroker, worker):
        """One look a tick, each with the suspects of the look before."""
        suspects: dict[str, set[str]] = {}

        def look() -> None:
            nonlocal suspects
            try:
                suspects = self.give_back_lost(broker, worker, suspects)
            except Exception as exc:  # Redis away: look again next time
                log.debug("ack sets not checked", extra={"error": str(exc)[:200]})

        return look

    def give_back_lost(self, broker: RedisBroker, worker, suspects: dict[str, set[str]]) -> dict[str, set[str]]:
        """One look; returns the ids to look at again (found not held this time)."""
        queues = list(worker.consumers)
        with broker.client.pipeline(transaction=False) as pipe:
            for queue in queues:
                pipe.smembers(f"{broker.namespace}:__acks__.{broker.broker_id}.{queue}")
            members = pipe.execute()
        held = self.held(worker)
        found = {}
        for queue, ids in zip(queues, members):
            missing = {i.decode() for i in ids} - held
            lost = missing & suspects.get(queue, set())
            if lost:
                broker.do_requeue(queue, *lost)
                log.warning("messages this worker no longer held went back to their queue",
                            extra={"queue": queue, "count": len(lost)})
            found[queue] = missing - lost
        return found
