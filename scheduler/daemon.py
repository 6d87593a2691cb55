"""`fleet scheduler`: any number may run; one leads and emits the schedule's slots.

The leader holds a Redis lease (`fleet:scheduler:leader`, TTL FLEET_SCHEDULER_LEASE) and
renews it every quarter of that; standbys try to take it every `STANDBY_POLL` seconds, so one
leads within the TTL of a leader's death. The lease only decides who does the work: each slot is claimed in the
database before it is sent (`actors.schedule.emit`), so a deposed leader that has not
noticed yet can never emit a slot twice. SIGTERM (or Ctrl-C): the emission in hand finishes,
then the lease is given up at once, and the process exits.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from datetime import datetime, timezone

import redis
from redis import RedisError

from actors import outbox
from actors import schedule as sched
from core import trace
from core.clock import CLOCK, fleet_datetime
from core.errors import FleetError, classify
from core.locks import RedisLock
from core.settings import Settings
from core.state import state_redis
from db.database import database

log = logging.getLogger("fleet.scheduler")

RENEWALS_A_LEASE = 4  # the leader renews its lease this often within its TTL (FLEET_SCHEDULER_LEASE)
STANDBY_POLL = 0.5
HEARTBEAT_EVERY = 1.0
IDLE_WAKE = 0.5  # the loop looks around at least this often
TRUST_MARGIN = 1.0  # the leader stops emitting this long before its lease could have expired
LEASE_IO_TIMEOUT = 2.0  # seconds a lease or heartbeat command may take
FAILURES_TO_STEP_DOWN = 3  # loops in a row that failed: a leader that cannot work lets a standby lead


class Daemon:
    def __init__(self, settings: Settings, schedule: sched.Schedule):
        self.id = sched.scheduler_id()
        self.schedule = schedule
        if state_redis() is None:
            raise FleetError("the scheduler needs a Redis for its leader lease: set FLEET_STATE_REDIS_URL")
        # short timeouts of its own: a Redis that hangs must not hold a lease decision (or a
        # SIGTERM) longer than a second or two
        self.client = redis.Redis.from_url(settings.state_redis_url, socket_connect_timeout=LEASE_IO_TIMEOUT,
                                           socket_timeout=LEASE_IO_TIMEOUT)
        self.lease = RedisLock(self.client, sched.LEADER_KEY, self.id, settings.scheduler_lease)  # the leader lease
        self.emitter = sched.SlotEmitter(schedule, self.id, settings.schedule_grace)
        self.stopping = threading.Event()
        self.trusted_until = 0.0  # monotonic; the leader emits only before this
        self.failures = 0  # loops in a row that failed
        self.standby_until = 0.0  # monotonic; after stepping down, let another take the lease first
        self.resend_every = settings.outbox_resend
        self.next_resend = 0.0  # monotonic; when the leader next sends what the outbox still holds
        self.info = {"id": self.id, "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "schedule": str(schedule.path), "digest": schedule.digest}

    @property
    def leading(self) -> bool:
        return time.monotonic() < self.trusted_until

    def run(self) -> None:
        log.info("scheduler started", extra={"scheduler": self.id, "schedule": str(self.schedule.path),
                                             "entries": len(self.schedule.enabled)})
        next_lease = next_heartbeat = 0.0
        next_slot = None
        while not self.stopping.is_set():
            now = time.monotonic()
            try:
                if now >= next_heartbeat:
                    CLOCK.measure(self.client, "scheduler")  # before it leads: its slots go by the fleet's clock
                    sched.heartbeat(self.client, self.info)
                    next_heartbeat = now + HEARTBEAT_EVERY
                if now >= next_lease:
                    self._hold_lease()
                    next_lease = now + (self.lease.ttl / RENEWALS_A_LEASE if self.leading else STANDBY_POLL)
                if self.leading:
                    with trace.traced(trace.new_trace_id()):  # a trace a tick, not the process's
                        next_slot = self.emitter.tick(fleet_datetime())
                    if now >= self.next_resend:
                        self._resend_outbox()
            except Exception:  # Redis, the database, or a bug: log it, keep the lease logic going
                log.exception("scheduler loop failed; trying again in a second")
                self.failures += 1
                if self.failures >= FAILURES_TO_STEP_DOWN:
                    self._step_down()
                self._reconnect()
                next_lease = min(next_lease, time.monotonic() + 1)
                self.stopping.wait(1)
                continue
            self.failures = 0
            self.stopping.wait(self._sleep(next_lease, next_heartbeat, next_slot))
        self._stop()

    def _resend_outbox(self) -> None:
        """Send the jobs committed but not sent (Redis refused them); a failure is one line, and
        the next pass tries again."""
        self.next_resend = time.monotonic() + self.resend_every
        try:
            with trace.traced(trace.new_trace_id()):
                outbox.resend_due()
        except Exception as exc:
            error = classify(exc)
            log.warning("outbox not sent this time", extra={"error_code": error.code.code, "error": error.message[:200]})

    def _step_down(self) -> None:
        """A scheduler whose loop keeps failing (the database unreachable from this host) gives
        up the lease, so that a standby that can work leads; it tries again later."""
        self.failures = 0
        self.trusted_until = 0.0
        self.standby_until = time.monotonic() + self.lease.ttl
        try:
            self.lease.release()
            log.warning("scheduler stepped down after failing loops", extra={"scheduler": self.id})
        except RedisError:
            log.warning("could not give up the lease; it expires on its own", exc_info=True)

    def _hold_lease(self) -> None:
        was_leading = self.leading
        started = time.monotonic()
        if not was_leading and started < self.standby_until:
            return
        held = self.lease.renew() if was_leading else self.lease.acquire()
        if held:
            if not was_leading:
                self.emitter.start(fleet_datetime())
                log.info("scheduler leading", extra={"scheduler": self.id})
            self.trusted_until = started + self.lease.ttl - TRUST_MARGIN
        elif self.trusted_until:  # it led: its lease was taken, or ran out while the process was stopped
            self.trusted_until = 0.0
            log.warning("scheduler lost its lease; standing by", extra={"scheduler": self.id})

    def _sleep(self, next_lease: float, next_heartbeat: float, next_slot: datetime | None) -> float:
        now = time.monotonic()
        wake = min(next_lease, next_heartbeat, now + IDLE_WAKE)
        if self.leading:
            wake = min(wake, self.next_resend)
        if self.leading and next_slot is not None:
            wake = min(wake, now + (next_slot - fleet_datetime()).total_seconds())
        return max(0.0, wake - now)

    def _reconnect(self) -> None:
        if not database.is_closed():
            try:
                database.close()
            except Exception:
                pass

    def _stop(self) -> None:
        was_leading = self.leading
        try:
            self.lease.release()  # only if it is still ours
            self.client.hdel(sched.MEMBERS_KEY, self.id)
            CLOCK.forget(self.client)
        except RedisError:
            if was_leading:
                log.warning("could not give up the lease; it expires on its own", exc_info=True)
        log.info("scheduler stopped", extra={"scheduler": self.id})


def run(settings: Settings, schedule: sched.Schedule) -> None:
    daemon = Daemon(settings, schedule)

    def stop(signum, frame):
        log.info("scheduler stopping", extra={"signal": signal.Signals(signum).name})
        daemon.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    database.connect(reuse_if_open=True)
    daemon.run()
