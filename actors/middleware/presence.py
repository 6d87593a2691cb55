"""Worker presence: each process that *consumes* messages keeps a record in the state Redis
(host, pid, queues, threads, last heartbeat), refreshed by a thread and expiring on its own
when the process dies. The dashboard and /healthz count these, so a process that only
sends (the web app, each CLI call) is never taken for a worker.

Keys: `fleet:workers` (a sorted set of worker ids by last heartbeat, for listing without a
SCAN) and `fleet:worker:<id>` (the record, with a TTL).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from dramatiq.middleware import Middleware

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
    heartbeat: float  # unix time of the last heartbeat

    @property
    def seconds_ago(self) -> float:
        return max(0.0, time.time() - self.heartbeat)


def live_workers(client, within_seconds: float) -> list[LiveWorker]:
    """Workers with a heartbeat in the window, newest first: two round trips, however big Redis is."""
    ids = client.zrevrangebyscore(INDEX, "+inf", time.time() - within_seconds)
    if not ids:
        return []
    with client.pipeline(transaction=False) as pipe:
        for worker_id in ids:
            pipe.hgetall(_record_key(worker_id.decode()))
        records = pipe.execute()
    workers = []
    for worker_id, raw in zip(ids, records):
        if not raw:
            continue  # expired between the two calls
        r = {k.decode(): v.decode() for k, v in raw.items()}
        workers.append(LiveWorker(worker_id.decode(), r["host"], int(r["pid"]),
                                  tuple(q for q in r["queues"].split(",") if q), int(r["threads"]),
                                  float(r["heartbeat"])))
    return workers


class WorkerPresence(Middleware):
    def __init__(self, ttl: float):
        self.ttl = max(int(ttl), int(BEAT) + 1)  # a record outlives a missed beat, not a dead process
        self._ticker = Ticker("fleet-presence", self._beat_or_warn)
        self.worker_id = ""
        self.record: dict = {}

    def after_worker_boot(self, broker, worker):
        if state_redis() is None:
            return  # RabbitMQ without FLEET_STATE_REDIS_URL: nowhere to keep it
        queues = worker.consumer_whitelist or {q for q in broker.get_declared_queues() if not q.endswith((".DQ", ".XQ"))}
        self.worker_id = f"{process_id()}:{id(worker):x}"
        self.record = {"host": host_name(), "pid": os.getpid(), "queues": ",".join(sorted(queues)),
                       "threads": worker.worker_threads, "started_at": time.time()}
        self._beat()
        self._ticker.start(BEAT)

    def before_worker_shutdown(self, broker, worker):
        if not self.worker_id:
            return
        self._ticker.stop(wait=BEAT + 1)
        try:
            client = state_redis()
            with client.pipeline() as pipe:
                pipe.zrem(INDEX, self.worker_id).delete(_record_key(self.worker_id)).execute()
        except Exception:
            log.warning("could not remove the worker's presence record", exc_info=True)

    def _beat_or_warn(self) -> None:
        try:
            self._beat()
        except Exception:
            log.warning("worker heartbeat failed; will try again", exc_info=True)

    def _beat(self) -> None:
        now = time.time()
        client = state_redis()
        with client.pipeline() as pipe:
            pipe.hset(_record_key(self.worker_id), mapping={**self.record, "heartbeat": now})
            pipe.expire(_record_key(self.worker_id), self.ttl)
            pipe.zadd(INDEX, {self.worker_id: now})
            pipe.set(alive_key(process_id()), 1, ex=self.ttl)  # the process's unique locks live while it does
            pipe.zremrangebyscore(INDEX, "-inf", now - self.ttl)  # the dead ones' entries
            pipe.execute()
