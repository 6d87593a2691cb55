"""Scheduled runs: a run's ledger row follows its job, and the run itself releases its overlap lock.

The scheduler sends a scheduled task with its ledger row's id in the message options
(`schedule_run`) and, for an entry `without_overlapping`, the key of the lock it took
(`schedule_lock`, valued with the run id). Here, around each attempt:

- the row becomes `running`, then `succeeded` or `failed` with the error code, or back to
  `emitted` while the job waits for a retry or an open breaker;
- the lock is held with a short TTL that a thread of the worker renews while the run is
  in hand, so a worker that dies lets it expire within FLEET_OVERLAP_LOCK_TTL; it goes back to
  the long queued TTL while the job waits, and is deleted when the run ends, on every path;
- a redelivered run whose lock another run has taken meanwhile is skipped, not run twice.
"""
from __future__ import annotations

import logging
import threading
import time

from dramatiq.middleware import Middleware, SkipMessage

from actors.middleware.outcome import Outcome, get_outcome, set_outcome
from core.clock import fleet_utcnow
from core.locks import RedisLock
from core.redact import redact
from core.settings import get_settings
from core.state import state_redis
from core.ticker import Ticker
from db.models.schedule import ScheduleRun

log = logging.getLogger("fleet.schedule")

RUN_OPTION = "schedule_run"
LOCK_OPTION = "schedule_lock"
LOCK_TTL_QUEUED = 3600  # seconds: a run waiting in its queue (or for a retry) keeps its entry locked
RENEWALS_A_LOCK = 3  # a run in a worker's hands renews its lock this often within FLEET_OVERLAP_LOCK_TTL


def lock_key(entry_name: str) -> str:
    return f"fleet:schedule:lock:{entry_name}"


def run_lock(client, key: str, run_id: int, ttl: float | None = None) -> RedisLock:
    """The overlap lock `key` as run `run_id` holds it."""
    return RedisLock(client, key, run_id, ttl or get_settings().overlap_lock_ttl)


def lock_holder(client, key: str) -> int | None:
    """The run holding the overlap lock `key`, or None."""
    holder = run_lock(client, key, 0).holder()
    return int(holder) if holder else None


def _ended(run_id: int) -> bool:
    """Whether the run's row is final: this message is a second copy (sent twice, or
    redelivered after its ack was lost). When the ledger cannot be read, the run goes ahead."""
    try:
        return ScheduleRun.select(ScheduleRun.state).where(
            (ScheduleRun.id == run_id) & ScheduleRun.state.in_(ScheduleRun.FINAL)).exists()
    except Exception:
        log.warning("could not read the schedule ledger", exc_info=True, extra={"schedule_run": run_id})
        return False


def update_run(run_id: int, **fields) -> None:
    """The ledger is for reading: a write that fails is logged, and never fails the job."""
    try:
        ScheduleRun.update(**fields).where(ScheduleRun.id == run_id).execute()
    except Exception:
        log.exception("could not update the schedule ledger", extra={"schedule_run": run_id})


class ScheduledRuns(Middleware):
    def __init__(self):
        self._held: dict[str, tuple[str, int]] = {}  # message id -> (lock key, run id) of runs in hand
        self._started: dict[str, float] = {}  # message id -> monotonic start of its attempt
        self._lock = threading.Lock()
        self._ticker = Ticker("fleet-schedule-locks", self._renew)

    # -- the lock's renewal while runs are in hand -----------------------------------------
    def after_worker_boot(self, broker, worker):
        self._ticker.start(get_settings().overlap_lock_ttl / RENEWALS_A_LOCK)

    def after_worker_shutdown(self, broker, worker):
        self._ticker.stop()

    def _renew(self) -> None:
        client = state_redis()
        if client is None:
            return
        # under the lock: a run that ends meanwhile must not get its short TTL back
        with self._lock:
            try:
                for key, run_id in self._held.values():
                    if not run_lock(client, key, run_id).renew():
                        log.warning("a running schedule run lost its overlap lock",
                                    extra={"schedule_run": run_id, "lock": key})
            except Exception:
                log.warning("could not renew schedule locks; will try again", exc_info=True)

    # -- around each attempt ------------------------------------------------------------------
    def before_process_message(self, broker, message):
        run_id = message.options.get(RUN_OPTION)
        if run_id is None:
            return
        if _ended(run_id):
            set_outcome(message, Outcome("skipped"))
            raise SkipMessage(f"schedule run #{run_id} has ended already: a second copy is not run")
        key = message.options.get(LOCK_OPTION)
        client = state_redis()
        if key and client is not None:
            if not run_lock(client, key, run_id).acquire():
                holder = lock_holder(client, key)
                update_run(run_id, state="skipped", finished_at=fleet_utcnow(),
                           detail=f"overlap: run #{holder} started while this one waited for a worker")
                set_outcome(message, Outcome("skipped"))
                raise SkipMessage(f"schedule run #{run_id}: run #{holder} holds the entry")
            with self._lock:
                self._held[message.message_id] = (key, run_id)
        self._started[message.message_id] = time.monotonic()
        update_run(run_id, state="running", started_at=fleet_utcnow(), finished_at=None, duration_seconds=None)

    def after_process_message(self, broker, message, *, result=None, exception=None):
        run_id = message.options.get(RUN_OPTION)
        if run_id is None:
            return
        outcome = get_outcome(message) or Outcome("success" if exception is None else "failed")
        if outcome.status == "skipped":
            return  # our own skip: the row says why already
        if outcome.status == "abandoned":  # a stale copy: the run is its redelivered copy's, lock and all
            self._started.pop(message.message_id, None)
            with self._lock:
                self._held.pop(message.message_id, None)
            return
        started = self._started.pop(message.message_id, None)
        fields = {}
        if started is not None:
            fields["duration_seconds"] = round(time.monotonic() - started, 3)
        code = outcome.error.code.code if outcome.error else None
        waiting = outcome.status in ("retrying", "deferred")
        if waiting:
            wait = f" for {outcome.delay_seconds:.0f} s" if outcome.delay_seconds else ""
            fields.update(state="emitted", error_code=code, detail=f"{outcome.status}{wait} after {code}")
        else:
            fields.update(state="succeeded" if outcome.status == "success" else "failed",
                          error_code=code, finished_at=fleet_utcnow())
            if outcome.error:
                fields["detail"] = redact(outcome.error.message)[:500]
        update_run(run_id, **fields)
        wait = max(LOCK_TTL_QUEUED, (outcome.delay_seconds or 0) + LOCK_TTL_QUEUED) if waiting else None
        with self._lock:
            self._held.pop(message.message_id, None)
            self._let_go(message, run_id, wait)

    def after_skip_message(self, broker, message):
        self.after_process_message(broker, message)

    @staticmethod
    def _let_go(message, run_id: int, wait: float | None) -> None:
        """Release the lock of a run that ended, or keep it `wait` seconds for one that waits."""
        key = message.options.get(LOCK_OPTION)
        client = state_redis()
        if not key or client is None:
            return
        try:
            if wait:
                run_lock(client, key, run_id).renew(wait)
            else:
                run_lock(client, key, run_id).release()
        except Exception:
            log.warning("could not release the schedule lock; it expires on its own", exc_info=True,
                        extra={"schedule_run": run_id})
