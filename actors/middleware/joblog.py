"""Writes a JobLog row per attempt, from a buffer, in batches, off the worker threads.

A row is buffered when an attempt starts and completed when it ends; a background
thread writes the buffer every FLUSH_INTERVAL seconds (an attempt that ends before
that is inserted once, already complete). Shutdown flushes what is left.

Each flush takes a connection from the pool and gives it back, so a flush after the
database came back writes what piled up meanwhile. While it is away the buffer holds up
to MAX_BUFFERED rows; an attempt beyond that gets no row, and is counted: a log line,
the Redis counter `fleet:joblog:dropped` and the `fleet_joblog_dropped_total` metric.
"""
from __future__ import annotations

import inspect
import json
import logging
import os
import threading
import time
import traceback as tb

from dramatiq.errors import ActorNotFound
from dramatiq.middleware import Middleware
from peewee import PostgresqlDatabase
from psycopg2.extras import execute_values

from actors.middleware.fencing import moved_to_run_id
from actors.middleware.outcome import get_outcome
from core.errors import database_error_text
from core.identity import process_id
from core.redact import redact
from core.state import state_redis
from core.ticker import Ticker
from db.database import database, release_connection
from db.job_log_hours import fold
from db.models import utcnow
from db.models.jobs import JobArgument, JobLog

log = logging.getLogger("fleet.joblog")


class _SummaryKept(logging.Filter):
    """A job's return value is its JobLog summary here, not a lost result: Dramatiq's warning
    that it was discarded (without its Results middleware) would be a false alarm a job."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "returned a value that is not None" not in str(record.msg)


logging.getLogger("dramatiq.worker.WorkerThread").addFilter(_SummaryKept())

FLUSH_INTERVAL = 0.5
FOLD_INTERVAL = 10.0  # how often a process folds the hourly counts' pending changes (db.job_log_hours)
MAX_MESSAGE = 2_000
MAX_TRACEBACK = 8_000
INSERT_CHUNK = 200
MAX_BUFFERED = 20_000  # rows a worker process keeps while the database is away
DROPPED_KEY = "fleet:joblog:dropped"


def _cut(text: str | None, limit: int) -> str | None:
    text = redact(text)
    return text if text is None or len(text) <= limit else text[: limit - 15] + "\n…(cut)"


def args_text(message) -> str | None:
    """A message's arguments as its JobLog row keeps them."""
    return _cut(json.dumps({"args": message.args, "kwargs": message.kwargs}, default=str), MAX_MESSAGE)


MAX_ARGUMENT = 120  # longer strings (texts, paths) are not searched for
_signatures: dict[str, inspect.Signature | None] = {}


def _signature(broker, actor_name: str) -> inspect.Signature | None:
    if broker is None:
        return None
    if actor_name not in _signatures:
        try:
            _signatures[actor_name] = inspect.signature(broker.get_actor(actor_name).fn)
        except (ActorNotFound, TypeError, ValueError):
            _signatures[actor_name] = None
    return _signatures[actor_name]


def named_arguments(broker, message) -> list[tuple[str, str]]:
    """The message's scalar arguments by parameter name (`plan_id`, `13`): what the job log's
    search finds a job by. Positional ones are named from the actor's signature."""
    named = dict(message.kwargs)
    signature = _signature(broker, message.actor_name)
    if signature is not None:
        try:
            named = dict(signature.bind_partial(*message.args, **message.kwargs).arguments)
        except TypeError:
            pass
    pairs = []
    for name, value in named.items():
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            continue
        text = str(value)
        if 0 < len(text) <= MAX_ARGUMENT and redact(text) == text:
            pairs.append((name[:MAX_ARGUMENT], text))
    return pairs


class _Entry:
    __slots__ = ("row", "started", "inserted", "dirty", "arguments")

    def __init__(self, row: dict, arguments: list[tuple[str, str]] | None = None):
        self.row = row
        self.arguments = arguments or []  # written with the row of a first attempt
        self.started = time.monotonic()
        self.inserted = False
        self.dirty = True


class JobLogWriter(Middleware):
    def __init__(self, flush_interval: float = FLUSH_INTERVAL, max_buffered: int = MAX_BUFFERED):
        self.flush_interval = flush_interval
        self.max_buffered = max_buffered
        self._dropped = 0  # rows not buffered since the last report
        self.worker_name = process_id()
        self._entries: dict[str, _Entry] = {}  # run id -> entry
        self._running: dict[str, str] = {}  # message id -> run id of its attempt in progress
        # rows to set `abandoned`: (message id, run id, run id of the redelivery or None, only if still started)
        self._abandon: list[tuple[str, str, str | None, bool]] = []
        self._lock = threading.Lock()
        self._ticker = Ticker("fleet-joblog", self._flush_or_keep)
        self._failing = False  # the last flush failed
        self._write_lock = threading.Lock()
        self._fold_at = 0.0

    # -- hooks -------------------------------------------------------------
    def after_process_boot(self, broker):
        self.worker_name = process_id()

    def after_worker_boot(self, broker, worker):
        self._ticker.start(self.flush_interval)

    def after_worker_shutdown(self, broker, worker):
        self._ticker.stop(wait=10)
        try:
            self.flush()
        except Exception as exc:
            log.error("JobLog rows not written at shutdown", extra={
                "error": database_error_text(exc)[:300], "lost": len(self._entries)})

    def before_process_message(self, broker, message):
        row = self._row(message)
        arguments = named_arguments(broker, message) if row["attempt"] == 1 else None
        with self._lock:
            if len(self._entries) >= self.max_buffered:
                self._dropped += 1
                return
            self._entries[row["run_id"]] = _Entry(row, arguments)
            self._running[message.message_id] = row["run_id"]
            delivery = getattr(message, "fleet_delivery", None)
            if delivery is not None and delivery.previous_run_id:  # a redelivery: the earlier attempt was abandoned
                self._abandon.append((message.message_id, delivery.previous_run_id, row["run_id"], True))

    def before_nack(self, broker, message):
        """A message that never started (not a valid job) still gets its row, once."""
        outcome = get_outcome(message)
        if outcome is None or outcome.error is None or outcome.error.code.code != "ERR_INVALID_MESSAGE":
            return
        if getattr(message, "fleet_logged", False):
            return
        message.fleet_logged = True
        row = self._row(message)
        row.update(status="failed", error_code="ERR_INVALID_MESSAGE", message=_cut(outcome.error.message, MAX_MESSAGE),
                   finished_at=row["created_at"], duration_seconds=0.0)
        with self._lock:
            self._entries[row["run_id"]] = _Entry(row)

    def _row(self, message) -> dict:
        attempt = message.options.get("retries", 0) + 1
        run_id = getattr(message, "fleet_run_id", None) or os.urandom(8).hex()  # the delivery's owner (fencing)
        return {
            "run_id": run_id,
            "job_class": message.actor_name,
            "message_id": message.message_id,
            "queue": message.queue_name,
            "status": "started",
            "attempt": attempt,
            "args": args_text(message),
            "trace_id": message.options.get("trace_id"),
            "worker": self.worker_name,
            "created_at": utcnow(),
            # every column, always: insert_many takes its columns from the first row of a batch
            "error_code": None,
            "message": None,
            "traceback": None,
            "duration_seconds": None,
            "finished_at": None,
        }

    def after_process_message(self, broker, message, *, result=None, exception=None):
        outcome = get_outcome(message)
        status = outcome.status if outcome else ("success" if exception is None else "failed")
        changes = {"status": status, "finished_at": utcnow()}
        if status == "abandoned":  # a stale copy: what it did or raised is not the job's outcome
            self._finish(message, {**changes, "message": "redelivered: another attempt runs this message"})
            self._link_abandoned(message, only_started=False)
            return
        if outcome and outcome.error:
            changes["error_code"] = outcome.error.code.code
            changes["message"] = _cut(outcome.error.message, MAX_MESSAGE)
        if exception is not None:
            text = "".join(tb.format_exception(type(exception), exception, exception.__traceback__))
            changes["traceback"] = _cut(text, MAX_TRACEBACK)
        elif result is not None:  # a job's summary of what it did (a sweep's counts), kept as its message
            summary = result if isinstance(result, str) else json.dumps(result, sort_keys=True, default=str)
            changes["message"] = _cut(summary, MAX_MESSAGE)
        self._finish(message, changes)

    def after_skip_message(self, broker, message):
        outcome = get_outcome(message)
        changes = {"status": outcome.status if outcome else "deferred", "finished_at": utcnow()}
        if outcome and outcome.error:
            changes["error_code"] = outcome.error.code.code
            changes["message"] = _cut(outcome.error.message, MAX_MESSAGE)
        self._finish(message, changes)

    def after_ack(self, broker, message):
        """A copy found stale only when it was settled (Redis was away when it ended): its row too."""
        outcome = get_outcome(message)
        if getattr(message, "fleet_stale", False) and (outcome is None or outcome.status != "abandoned"):
            self._link_abandoned(message, only_started=False)

    after_nack = after_ack

    def _link_abandoned(self, message, *, only_started: bool) -> None:
        run_id = getattr(message, "fleet_run_id", None)
        if run_id:
            with self._lock:
                self._abandon.append((message.message_id, run_id, moved_to_run_id(message), only_started))

    def _finish(self, message, changes: dict) -> None:
        with self._lock:
            entry = self._entries.get(self._running.pop(message.message_id, ""))
            if entry is None:
                return
            changes["duration_seconds"] = round(time.monotonic() - entry.started, 6)
            entry.row.update(changes)
            entry.dirty = True

    # -- writing -----------------------------------------------------------
    def _flush_or_keep(self) -> None:
        try:
            self.flush()
            if self._failing:
                log.warning("JobLog flush works again")
            self._failing = False
        except Exception as exc:
            if not self._failing:
                log.warning("JobLog flush failed; rows stay buffered and are written once the database is back",
                            extra={"error": database_error_text(exc)[:300], "buffered": len(self._entries)})
            self._failing = True

    def flush(self) -> None:
        """Write every new or changed row; keep finished rows out of the buffer afterwards. Every
        FOLD_INTERVAL, fold the hourly counts' pending changes too (db.job_log_hours)."""
        with self._write_lock:
            self._report_dropped()
            with self._lock:
                batch = [(key, e) for key, e in self._entries.items() if e.dirty]
                for _, e in batch:
                    e.dirty = False
                snapshot = [(key, e, dict(e.row), e.inserted) for key, e in batch]
                abandon, self._abandon = self._abandon, []
            if snapshot or abandon:
                self._write_snapshot(snapshot, abandon)
            if time.monotonic() >= self._fold_at:
                self._fold_at = time.monotonic() + FOLD_INTERVAL
                try:
                    fold()
                finally:
                    release_connection()

    def _write_snapshot(self, snapshot, abandon) -> None:
        try:
            self._write(snapshot, abandon)
        except Exception:
            with self._lock:
                for _, e, _, _ in snapshot:
                    e.dirty = True
                self._abandon[:0] = abandon
            raise
        finally:
            release_connection()  # back to the pool; a broken one is closed, the next flush gets a fresh one
        with self._lock:
            for key, e, row, _ in snapshot:
                e.inserted = True
                if row["status"] != "started" and not e.dirty:
                    self._entries.pop(key, None)

    def _report_dropped(self) -> None:
        with self._lock:
            dropped, self._dropped = self._dropped, 0
        if not dropped:
            return
        log.error("JobLog buffer full: attempts without a JobLog row", extra={
            "dropped": dropped, "max_buffered": self.max_buffered, "counter": DROPPED_KEY})
        try:
            client = state_redis()
            if client is not None:
                client.incrby(DROPPED_KEY, dropped)
        except Exception:
            with self._lock:
                self._dropped += dropped  # counted again with the next report

    @staticmethod
    def _write(snapshot, abandon=()) -> None:
        new = [row for _, _, row, inserted in snapshot if not inserted]
        updates = [row for _, _, row, inserted in snapshot if inserted]
        arguments = [{"message_id": row["message_id"], "name": name, "value": value, "created_at": row["created_at"]}
                     for _, e, row, inserted in snapshot if not inserted for name, value in e.arguments]
        database.connect(reuse_if_open=True)
        with database.atomic():
            if new:
                _insert_rows(new)
            for start in range(0, len(arguments), INSERT_CHUNK):
                JobArgument.insert_many(arguments[start:start + INSERT_CHUNK]).execute()
            for row in updates:
                fields = {k: v for k, v in row.items() if k not in ("run_id", "message_id")}
                JobLog.update(**fields).where(
                    (JobLog.message_id == row["message_id"]) & (JobLog.run_id == row["run_id"])
                ).execute()
            for message_id, run_id, redelivered_as, only_started in abandon:
                _mark_abandoned(message_id, run_id, redelivered_as, only_started)


def _mark_abandoned(message_id: str, run_id: str, redelivered_as: str | None, only_started: bool) -> None:
    """The row of an attempt whose message was redelivered: `abandoned`, linked to the redelivery's
    row. Marked by the redelivery (a row still `started`: its worker died or has not come back) and
    by the stale copy itself if it comes back (whatever it had written)."""
    fields = {"status": "abandoned"}
    if redelivered_as:
        fields["redelivered_as"] = redelivered_as
    where = (JobLog.message_id == message_id) & (JobLog.run_id == run_id)
    if only_started:
        where &= JobLog.status.in_(("started", "abandoned"))
    JobLog.update(**fields).where(where).execute()


COLUMNS = ("run_id", "job_class", "message_id", "queue", "status", "attempt", "args", "trace_id", "worker",
           "created_at", "error_code", "message", "traceback", "duration_seconds", "finished_at")


def _insert_rows(rows: list[dict]) -> None:
    """One prepared INSERT for the whole batch: building it with the ORM cost more than the write."""
    db = database.obj
    values = [tuple(row[c] for c in COLUMNS) for row in rows]
    columns = ", ".join(f'"{c}"' for c in COLUMNS)
    cursor = db.cursor()
    if isinstance(db, PostgresqlDatabase):
        execute_values(cursor, f'INSERT INTO "job_log" ({columns}) VALUES %s', values, page_size=INSERT_CHUNK)
    else:
        placeholders = ", ".join([db.param] * len(COLUMNS))
        cursor.executemany(f'INSERT INTO "job_log" ({columns}) VALUES ({placeholders})', values)
