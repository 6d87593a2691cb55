"""Worker presence: each process that *consumes* messages keeps a record in the state Redis
(host, pid, queues, threads, its broker id, last heartbeat, its clock's offset from the
fleet's), refreshed by a thread. The dashboard and /healthz count these, so a process that only
sends (the web app, each CLI call) is never taken for a worker. The same thread keeps the
worker's heartbeat in Dramatiq's heartbeat set fresh (`FleetRedisBroker.beat`), so a worker
counts as dead for redelivery exactly when it stops beating here (killed, hung, SIGSTOPped, cut off).

A worker that stops cleanly removes its record. One that stops beating without that is
*lost*: it stays listed as lost (since its last heartbeat, with the messages it still held
that were not redelivered yet) until an operator forgets it (`forget_worker`: the panel's
dashboard, `fleet workers forget ID`). A lost worker that comes back is live again.

Keys: `fleet:workers` (a sorted set of worker ids by last heartbeat, for listing without a
SCAN) and `fleet:worker:<id>` (the record).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from dramatiq.middleware import Middleware

from core.clock import CLOCK, fleet_time
from core.identity import PRESENCE_INDEX, alive_key, host_name, process_id
from core.state import state_redis
from core.ticker import Ticker

INDEX = PRESENCE_INDEX
BEAT = 5.0  # seconds between heartbeats

log = logging.getLogger("fleet.presence")


def _record_key(worker_id: str) -> str:
    return f"fleet:worker:{worker_id}"


@dataclass(frozen=True)
class LiveWorker:
    id: str
    host: str
    pid: int
    queues: tuple[str, ...]
    threads: int
    heartbeat: float  # unix time of the last heartbeat, by the fleet's clock (core.clock)
    broker_id: str = ""  # Dramatiq's id of its Redis broker (its ack sets), "" on RabbitMQ
    clock_offset: float = 0.0  # seconds its clock is ahead of the fleet's (negative: behind)

    @property
    def seconds_ago(self) -> float:
        return max(0.0, fleet_time() - self.heartbeat)


@dataclass(frozen=True)
class LostWorker:
    worker: LiveWorker  # as it was at its last heartbeat (lost since then)
    held: int | None  # messages it held that are not redelivered yet; None: not known (RabbitMQ)

    @property
    def jobs_text(self) -> str:
        """What became of the jobs it held, in words (the panel and the CLI)."""
        if self.held is None:
            return "not known (the broker redelivers them itself)"
        if self.held == 0:
            return "none waiting: redelivered (or it held none)"
        return f"{self.held} not redelivered yet"


def _workers(client, ids: list[bytes]) -> list[LiveWorker]:
    if not ids:
        return []
    with client.pipeline(transaction=False) as pipe:
        for worker_id in ids:
            pipe.hgetall(_record_key(worker_id.decode()))
        records = pipe.execute()
    workers = []
    for worker_id, raw in zip(ids, records):
        if not raw:
            continue  # removed between the two calls
        r = {k.decode(): v.decode() for k, v in raw.items()}
        workers.append(LiveWorker(worker_id.decode(), r["host"], int(r["pid"]),
                                  tuple(q for q in r["queues"].split(",") if q), int(r["threads"]),
                                  float(r["heartbeat"]), r.get("broker_id", ""),
                                  float(r.get("clock_offset", 0))))
    return workers


def live_workers(client, within_seconds: float) -> list[LiveWorker]:
    """Workers with a heartbeat in the window, newest first: two round trips, however big Redis is."""
    return _workers(client, client.zrevrangebyscore(INDEX, "+inf", fleet_time() - within_seconds))


def lost_workers(client, within_seconds: float, namespace: str = "fleet") -> list[LostWorker]:
    """Workers without a heartbeat in the window that did not stop cleanly, most recently lost
    first, each with the messages still in its ack sets (Redis broker): those not redelivered yet."""
    workers = _workers(client, client.zrevrangebyscore(INDEX, f"({fleet_time() - within_seconds}", "-inf"))
    with client.pipeline(transaction=False) as pipe:
        for w in workers:
            for queue in w.queues if w.broker_id else ():
                pipe.scard(f"{namespace}:__acks__.{w.broker_id}.{queue}")
                pipe.scard(f"{namespace}:__acks__.{w.broker_id}.{queue}.DQ")
        counts = iter(pipe.execute())
    return [LostWorker(w, sum(next(counts) for _ in range(2 * len(w.queues))) if w.broker_id else None)
            for w in workers]


class WorkerNotLost(ValueError):
    pass


def forget_worker(client, worker_id: str, within_seconds: float) -> LiveWorker:
    """Remove a lost worker's record; WorkerNotLost if there is no such worker or it is live."""
    found = _workers(client, [worker_id.encode()])
    if not found:
        raise WorkerNotLost(f"no worker {worker_id} is known")
    if found[0].seconds_ago < within_seconds:
        raise WorkerNotLost(f"worker {worker_id} is live (heartbeat {found[0].seconds_ago:.1f} s ago): "
                            "stop it instead")
    with client.pipeline() as pipe:
        pipe.zrem(INDEX, worker_id).delete(_record_key(worker_id)).execute()
    return found[0]


class WorkerPresence(Middleware):
    def __init__(self, heartbeat_timeout: float):
        # a beat every third of the timeout (at most every BEAT s): one late beat is not a death
        self.every = min(BEAT, max(0.2, heartbeat_timeout / 3))
        self.alive_ttl = max(int(heartbeat_timeout), int(self.every) + 1)
        self._ticker = Ticker("fleet-presence", self._beat_or_warn)
        self.worker_id = ""
        self.record: dict = {}
        self._broker = None

    def after_worker_boot(self, broker, worker):
        self._broker = broker if hasattr(broker, "beat") else None
        if state_redis() is None:
            return  # RabbitMQ without FLEET_STATE_REDIS_URL: nowhere to keep it
        queues = worker.consumer_whitelist or {q for q in broker.get_declared_queues() if not q.endswith((".DQ", ".XQ"))}
        self.worker_id = f"{process_id()}:{id(worker):x}"
        self.record = {"host": host_name(), "pid": os.getpid(), "queues": ",".join(sorted(queues)),
                       "threads": worker.worker_threads, "started_at": time.time(),
                       "broker_id": getattr(broker, "broker_id", "")}
        self._beat()
        self._ticker.start(self.every)

    def before_worker_shutdown(self, broker, worker):
        self._ticker.stop(wait=BEAT + 1)
        if not self.worker_id:
            return
        try:
            client = state_redis()
            with client.pipeline() as pipe:
                pipe.zrem(INDEX, self.worker_id).delete(_record_key(self.worker_id)).execute()
            CLOCK.forget(client)
        except Exception:
            log.warning("could not remove the worker's presence record", exc_info=True)

    def _beat_or_warn(self) -> None:
        try:
            self._beat()
        except Exception:
            log.warning("worker heartbeat failed; will try again", exc_info=True)

    def _beat(self) -> None:
        if self._broker is not None:
            self._broker.beat()
        if not self.worker_id:
            return
        client = state_redis()
        offset = CLOCK.measure(client, "worker")
        now = fleet_time()  # a worker whose clock drifted is neither taken for dead nor kept too long
        with client.pipeline() as pipe:
            pipe.hset(_record_key(self.worker_id), mapping={**self.record, "heartbeat": now,
                                                            "clock_offset": round(offset, 4)})
            pipe.zadd(INDEX, {self.worker_id: now})
            pipe.set(alive_key(process_id()), 1, ex=self.alive_ttl)  # the process's unique locks live while it does
            pipe.execute()
