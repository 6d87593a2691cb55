"""Batches: background work of many items with a ledger, live progress, cancel, resume, retry.

A domain plugs a *kind* into this runtime: `@batch_kind("translation", ...)` over a
handler that works one item. `create_batch` writes the batch, its items and a counter row
a chunk, then sends one chunk job per `chunk_size` (≤ 50) items with `send_many`. A chunk
job works its items in position order:

- it *claims* items (pending, or running under its own message id after a redelivery; the
  job holding its chunk's unique lock also takes over what a lost job left running), runs
  the handler on each, and settles them together with its chunk's counters in one
  transaction that also claims what comes next: a group of quick items at once, one item
  at a time as soon as they are slow (`ChunkRun`). Only that job writes that chunk row, so
  workers never queue on one counter row; the batch's progress is the sum of its chunk rows.
  An item already succeeded is never claimed again, so a redelivered or resumed chunk pays
  no AI call twice.
- a non-retryable error fails the item with its code and the chunk goes on; a retryable one
  puts the item back to pending and fails the job, which Fleet retries (or defers while the
  kind's service breaker is open); when the retry budget is spent, the chunk's open items
  fail with the last code (`on_give_up`).
- at its end it asks whether the batch has open items left. The batch finishes by one
  guarded transition under the batch row's lock (`finished_at IS NULL`): whoever gets there
  first stamps the totals recounted from the items and writes the JobLog row in that same
  transaction; the finish hooks run after it commits. It can only happen once per run of
  the batch (a retry opens it again).

Chunk jobs are unique jobs, so the unique lock of a chunk says its job is queued or running,
and that job is the only one working the chunk; `resume` sends again exactly the chunks with
open items and no lock (a lost message, a worker that died for good), and their new jobs take
over the items the lost ones left running.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable, Iterable, Sequence

import dramatiq
from peewee import SQL, SqliteDatabase, fn

from actors.middleware.unique import holder_of, live_holders, unique_key
from actors.runtime import fleet_actor, task
from core import trace
from core.errors import CODES, Classified, FleetError, classify
from core.redact import redact
from core.settings import MAX_BATCH_CHUNK, get_settings
from core.state import state_redis
from db.database import database
from db.models import utcnow
from db.models.batches import Batch, BatchChunk, BatchItem
from db.models.jobs import JobLog

log = logging.getLogger("fleet.batches")

INSERT_ROWS = 1_000  # item rows an INSERT
SHORT_ID = 8  # characters of a batch id shown in lists
MIN_PREFIX = 4  # shortest id prefix the CLI resolves
PRUNE_DAYS, PRUNE_KEEP = 30, 100
MAX_MESSAGE = 2_000


# -- kinds ------------------------------------------------------------------------------------

@dataclass
class ItemRun:
    """One attempt at one item, as the kind's handler sees it."""

    batch: Batch
    item: BatchItem
    owner: str
    chunk: int
    cost_usd: float = 0.0
    tokens: int = 0

    @property
    def options(self) -> dict:
        return self.batch.options or {}

    def charge(self, cost_usd: float, tokens: int) -> None:
        """Money and tokens spent on this item; kept even if the item then fails."""
        self.cost_usd += cost_usd
        self.tokens += tokens


@dataclass(frozen=True)
class Kind:
    name: str
    label: str
    handle: Callable  # (run) -> result, or with `many` (runs) -> [result or Exception, …]
    actor: dramatiq.Actor
    on_prune: Callable[[Batch], None] | None = None
    many: bool = False


KINDS: dict[str, Kind] = {}
FINISH_HOOKS: list[Callable[[Batch], None]] = []


def batch_kind(name: str, *, label: str, queue_name: str = "batches", service: str | None = None,
               time_limit: int = 60 * 60_000, retry_delays: tuple[int, ...] | None = None,
               on_prune: Callable[[Batch], None] | None = None, many: bool = False):
    """Register `handle(run: ItemRun) -> result dict` as the item handler of batch kind `name`
    and declare the chunk actor that runs it (queue, breaker `service`, time limit of a chunk).
    The handler raises to fail the item (`JobError` chooses the code).

    With `many=True` the handler gets the runs of a group of claimed items at once (items that
    are quick to do, where a query for all of them beats one an item) and returns a result or
    an exception for each; an exception it raises applies to the whole group."""

    def register(handle):
        def work(batch_id: str, number: int) -> None:
            work_chunk(KINDS[name], batch_id, number)

        options = {"retry_delays": retry_delays} if retry_delays is not None else {}
        actor = fleet_actor(work, actor_name=f"batch_chunk_{name}", queue_name=queue_name, unique=True,
                            service=service, time_limit=time_limit, on_give_up=_give_up, **options)
        if name in KINDS:
            raise ValueError(f"batch kind {name!r} is registered twice")
        KINDS[name] = Kind(name, label, handle, actor, on_prune, many)
        return handle

    return register


def on_finish(hook: Callable[[Batch], None]) -> Callable[[Batch], None]:
    """Call `hook(batch)` after a batch finishes (completed, cancelled or failed): once a finish,
    in the process that made the transition, after it committed."""
    FINISH_HOOKS.append(hook)
    return hook


def kind_of(batch: Batch) -> Kind | None:
    return KINDS.get(batch.kind)


# -- creating ---------------------------------------------------------------------------------

def create_batch(kind: str, title: str, keys: Sequence[str], *, options: dict | None = None,
                 created_by: str | None = None, chunk_size: int | None = None) -> Batch:
    """Write the batch, an item a key and a counter row a chunk in one transaction, then send
    the chunk jobs (pipelined). A batch whose sends did not get through stays `queued` and
    `resume` (or the periodic resume) sends them."""
    found = KINDS.get(kind)
    if found is None:
        raise FleetError(f"unknown batch kind {kind!r}", exit_code=2)
    if not keys:
        raise FleetError("a batch needs at least one item", exit_code=2)
    size = chunk_size or get_settings().batch_chunk
    if not 1 <= size <= MAX_BATCH_CHUNK:
        raise FleetError(f"a chunk holds 1 to {MAX_BATCH_CHUNK} items, not {size}", exit_code=2)
    batch_id = str(uuid.uuid4())
    chunks = (len(keys) + size - 1) // size
    now = utcnow()
    with database.atomic():
        Batch.insert(id=batch_id, kind=kind, title=title, status="queued", total=len(keys), chunk_size=size,
                     options=options or {}, created_by=created_by, created_at=now).execute()
        fields = [BatchItem.batch, BatchItem.position, BatchItem.key, BatchItem.status, BatchItem.attempts,
                  BatchItem.cost_usd, BatchItem.tokens]
        for start in range(0, len(keys), INSERT_ROWS):
            rows = [(batch_id, start + i, str(key), "pending", 0, 0.0, 0)
                    for i, key in enumerate(keys[start:start + INSERT_ROWS])]
            BatchItem.insert_many(rows, fields=fields).execute()
        chunk_fields = [BatchChunk.batch, BatchChunk.number, BatchChunk.processed, BatchChunk.succeeded,
                        BatchChunk.failed, BatchChunk.cost_usd, BatchChunk.tokens]
        for start in range(0, chunks, INSERT_ROWS):
            numbers = range(start, min(chunks, start + INSERT_ROWS))
            BatchChunk.insert_many([(batch_id, n, 0, 0, 0, 0.0, 0) for n in numbers], fields=chunk_fields).execute()
    found.actor.send_many((batch_id, n) for n in range(chunks))
    log.info("batch created", extra={"batch_id": batch_id, "kind": kind, "items": len(keys), "chunks": chunks})
    return Batch.get_by_id(batch_id)


# -- working a chunk --------------------------------------------------------------------------

def _chunk_items(batch: Batch, number: int):
    low = number * batch.chunk_size
    return (BatchItem.batch == batch.id) & (BatchItem.position >= low) & (BatchItem.position < low + batch.chunk_size)


def _chunk_row(batch_id: str, number: int):
    return (BatchChunk.batch == batch_id) & (BatchChunk.number == number)


def _claimable(owner: str, takes_over: bool = False):
    """pending, or running under this message (redelivered after its worker died); with
    `takes_over`, running under any message (see `holds_chunk`)."""
    running = BatchItem.status == "running"
    return (BatchItem.status == "pending") | (running if takes_over else running & (BatchItem.owner == owner))


def _lock_key(kind: Kind, batch_id: str, number: int) -> str:
    return unique_key(kind.actor.actor_name, [batch_id, number], {})


def holds_chunk(kind: Kind, batch_id: str, number: int, owner: str) -> bool:
    """Does this message hold its chunk's unique lock? Then no other job works the chunk, and
    items another message left running were left by a job that is gone."""
    client = state_redis()
    return client is not None and holder_of(client.get(_lock_key(kind, batch_id, number))) == owner


@dataclass
class _Outcome:
    run: ItemRun
    status: str  # succeeded | failed | pending (handed back for a retry of the chunk)
    result: dict | None = None
    error: Classified | None = None

    def fields(self, now: datetime) -> dict:
        """The item's new columns (the same for every item of a group with the same outcome)."""
        error = self.error
        return {"status": self.status, "owner": None, "cost_usd": BatchItem.cost_usd + self.run.cost_usd,
                "tokens": BatchItem.tokens + self.run.tokens, "result": self.result,
                "finished_at": None if self.status == "pending" else now,
                "error_code": error.code.code if error else None,
                "error_message": redact(error.message)[:MAX_MESSAGE] if error else None}

    def same_as(self) -> tuple:
        e = self.error
        return (self.status, repr(self.result), self.run.cost_usd, self.run.tokens,
                e.code.code if e else None, e.message if e else None)


class ChunkRun:
    """One run of one chunk job. Items are claimed and settled a group at a time, each commit
    also claiming the next group: the group doubles while its items take under GROUP_WINDOW
    together (no-ops cost a transaction per many items) and is one item as soon as they are
    slow, so an AI call's result is committed before the next call starts."""

    GROUP_WINDOW = 0.05  # seconds

    def __init__(self, kind: Kind, batch: Batch, number: int, owner: str, takes_over: bool = False):
        self.kind, self.batch, self.number, self.owner = kind, batch, number, owner
        self.claimable = _claimable(owner, takes_over)
        self.done: list[_Outcome] = []

    def work(self) -> None:
        size = self.batch.chunk_size if self.kind.many else 1  # a `many` kind says its items are quick
        while group := self._commit(claim=size):
            started = time.monotonic()
            if self.kind.many:
                self._work_together(group)
            else:
                self._work_each(group, started)
            quick = time.monotonic() - started < self.GROUP_WINDOW
            size = min(size * 2, MAX_BATCH_CHUNK) if quick else 1

    def _work_each(self, group: list[BatchItem], started: float) -> None:
        for n, item in enumerate(group):
            run = ItemRun(self.batch, item, self.owner, self.number)
            try:
                result = self.kind.handle(run)
            except Exception as exc:
                self._failed(run, exc, unrun=group[n + 1:])
            else:
                self.done.append(_Outcome(run, "succeeded", result))
            if n + 1 < len(group) and time.monotonic() - started >= self.GROUP_WINDOW:
                self._commit()

    def _work_together(self, group: list[BatchItem]) -> None:
        runs = [ItemRun(self.batch, item, self.owner, self.number) for item in group]
        try:
            results = self.kind.handle(runs)
        except Exception as exc:
            error = classify(exc)
            if error.retryable and error.code.code != "ERR_INTERNAL":  # an unexpected error fails this group alone
                self.done += [_Outcome(run, "pending", error=error) for run in runs]
                self._commit()
                raise
            results = [exc] * len(runs)
        for n, (run, result) in enumerate(zip(runs, results)):
            if isinstance(result, Exception):
                self._failed(run, result, unrun=group[n + 1:])
            else:
                self.done.append(_Outcome(run, "succeeded", result))

    def _failed(self, run: ItemRun, exc: Exception, unrun: Sequence[BatchItem] = ()) -> None:
        """A permanent error fails the item; a retryable one hands it (and `unrun`) back and
        fails the job, which Fleet retries. An unexpected error (ERR_INTERNAL) is the item's own:
        it fails that item alone, never the items after it."""
        error = classify(exc)
        if error.retryable and error.code.code != "ERR_INTERNAL":
            self.done.append(_Outcome(run, "pending", error=error))
            self._commit(release=unrun)
            raise exc
        self.done.append(_Outcome(run, "failed", error=error))
        log.info("batch item failed", extra={"batch_id": self.batch.id, "position": run.item.position,
                                             "error_code": error.code.code})

    def _commit(self, *, claim: int = 0, release: Sequence[BatchItem] = ()) -> list[BatchItem]:
        """In one transaction: settle what is done (items and the chunk's counters), hand back
        `release`d items that never ran, and claim up to `claim` more; returns those claimed."""
        now = utcnow()
        claimed: list[BatchItem] = []
        with database.atomic():
            counters = self._settle(now)
            if release:
                (BatchItem.update(status="pending", owner=None, attempts=BatchItem.attempts - 1)
                 .where(BatchItem.id.in_([i.id for i in release]) & self._mine()).execute())
            if claim:
                claimed = self._claim(claim, now)
                counters["current_item"] = claimed[0].key if claimed else None
            if counters:
                counters["touched_at"] = now
                BatchChunk.update(**counters).where(_chunk_row(self.batch.id, self.number)).execute()
        self.done.clear()
        return claimed

    def _mine(self):
        return (BatchItem.status == "running") & (BatchItem.owner == self.owner)

    def _settle(self, now: datetime) -> dict:
        groups: dict[tuple, list[_Outcome]] = {}
        for outcome in self.done:
            groups.setdefault(outcome.same_as(), []).append(outcome)
        totals = {"processed": 0, "succeeded": 0, "failed": 0, "cost_usd": 0.0, "tokens": 0}
        for alike in groups.values():
            first = alike[0]
            settled = (BatchItem.update(**first.fields(now))
                       .where(BatchItem.id.in_([o.run.item.id for o in alike]) & self._mine()).execute())
            if settled < len(alike):
                log.warning("batch items were taken from their job", extra={"batch_id": self.batch.id,
                                                                            "items": len(alike) - settled})
            if first.status != "pending":
                totals["processed"] += settled
                totals[first.status] += settled
            totals["cost_usd"] += settled * first.run.cost_usd
            totals["tokens"] += settled * first.run.tokens
        return {name: getattr(BatchChunk, name) + value for name, value in totals.items() if value}

    def _claim(self, size: int, now: datetime) -> list[BatchItem]:
        """pending items (or ones left running by this same message, after a redelivery) → running."""
        next_ids = (BatchItem.select(BatchItem.id).where(_chunk_items(self.batch, self.number) & self.claimable)
                    .order_by(BatchItem.position).limit(size))
        # claimable again in the outer WHERE: PostgreSQL re-checks it on a row another job took meanwhile
        (BatchItem.update(status="running", owner=self.owner, started_at=now, finished_at=None,
                          attempts=BatchItem.attempts + 1)
         .where(BatchItem.id.in_(next_ids) & self.claimable).execute())
        return list(BatchItem.select(BatchItem.id, BatchItem.position, BatchItem.key)
                    .where(_chunk_items(self.batch, self.number) & self._mine() & (BatchItem.started_at == now))
                    .order_by(BatchItem.position))


def work_chunk(kind: Kind, batch_id: str, number: int) -> None:
    """The body of every chunk job (see the module's docstring)."""
    owner = trace.current().get("message_id") or f"direct-{uuid.uuid4().hex}"
    batch = Batch.get_or_none(Batch.id == batch_id)
    if batch is None:
        log.warning("chunk of a batch that no longer exists", extra={"batch_id": batch_id, "chunk": number})
        return
    if batch.status == "queued":
        Batch.update(status="processing", started_at=utcnow()).where(
            (Batch.id == batch_id) & (Batch.status == "queued")).execute()
    takes_over = holds_chunk(kind, batch_id, number, owner)
    if batch.status == "cancelled" and takes_over:  # what a lost job was running is not started again
        with database.atomic():
            gone = (BatchItem.update(status="cancelled", owner=None, finished_at=utcnow())
                    .where(_chunk_items(batch, number) & (BatchItem.status == "running")).execute())
            Batch.update(cancelled=Batch.cancelled + gone).where(Batch.id == batch_id).execute()
    ChunkRun(kind, batch, number, owner, takes_over).work()
    finish_if_done(batch_id)


def _give_up(message, error: Classified) -> None:
    """`on_give_up` of chunk jobs: the chunk's open items fail with the last code."""
    batch_id, number = message.args[:2]
    kind = KINDS[message.actor_name.removeprefix("batch_chunk_")]
    fail_open_items(batch_id, number, message.message_id, error, holds_chunk(kind, batch_id, number, message.message_id))
    finish_if_done(batch_id)


def fail_open_items(batch_id: str, number: int, owner: str, error: Classified, takes_over: bool = False) -> int:
    batch = Batch.get_or_none(Batch.id == batch_id)
    if batch is None:
        return 0
    now = utcnow()
    text = redact(error.message)[:MAX_MESSAGE]
    open_items = _chunk_items(batch, number) & _claimable(owner, takes_over)
    with database.atomic():
        attempted = (BatchItem.update(status="failed", owner=None, finished_at=now, error_code=error.code.code,
                                      error_message=text)
                     .where(open_items & (BatchItem.attempts > 0)).execute())
        untried = (BatchItem.update(status="failed", owner=None, finished_at=now, error_code=error.code.code,
                                    error_message=f"not attempted: the chunk gave up after {text}"[:MAX_MESSAGE])
                   .where(open_items).execute())
        failed = attempted + untried
        if failed:
            BatchChunk.update(processed=BatchChunk.processed + failed, failed=BatchChunk.failed + failed,
                              current_item=None, touched_at=now).where(_chunk_row(batch_id, number)).execute()
    log.warning("batch chunk gave up", extra={"batch_id": batch_id, "chunk": number, "items_failed": failed,
                                              "error_code": error.code.code})
    return failed


# -- finishing --------------------------------------------------------------------------------

@contextlib.contextmanager
def _locked(batch_id: str):
    """A transaction that holds the batch row: SQLite's write lock from BEGIN, or PostgreSQL's
    row lock. The finish, cancel and retry serialise on it; chunk jobs never take it per item."""
    if isinstance(database.obj, SqliteDatabase):
        with database.atomic("IMMEDIATE"):
            yield Batch.get_or_none(Batch.id == batch_id)
    else:
        with database.atomic():
            yield Batch.select().where(Batch.id == batch_id).for_update().first()


def _has_open(batch_id: str) -> bool:
    return BatchItem.select().where((BatchItem.batch == batch_id) & BatchItem.status.in_(BatchItem.OPEN)).exists()


def recount(batch_id: str) -> dict:
    """The counters recomputed from the item rows."""
    rows = (BatchItem.select(BatchItem.status, fn.COUNT(BatchItem.id), fn.SUM(BatchItem.cost_usd), fn.SUM(BatchItem.tokens))
            .where(BatchItem.batch == batch_id).group_by(BatchItem.status).tuples())
    counts = {status: 0 for status in BatchItem.STATUSES}
    cost = tokens = 0
    for status, n, spent, used in rows:
        counts[status] = n
        cost += spent or 0
        tokens += used or 0
    return {"processed": counts["succeeded"] + counts["failed"], "succeeded": counts["succeeded"],
            "failed": counts["failed"], "cancelled": counts["cancelled"], "cost_usd": cost, "tokens": int(tokens)}


def finish_if_done(batch_id: str) -> bool:
    """Finish the batch if no item is open; True only for the one call that did it."""
    if _has_open(batch_id):
        return False
    with _locked(batch_id) as batch:
        if batch is None or batch.finished_at is not None or _has_open(batch_id):
            return False
        totals = recount(batch_id)
        status = batch.status if batch.status in ("cancelled", "failed") else "completed"
        now = utcnow()
        Batch.update(status=status, finished_at=now, current_item=None, started_at=batch.started_at or now,
                     **totals).where(Batch.id == batch_id).execute()
        batch = Batch.get_by_id(batch_id)
        _log_finish(batch)
    log.info("batch finished", extra={"batch_id": batch_id, "status": status_label(batch), "kind": batch.kind,
                                      **totals})
    for hook in FINISH_HOOKS:
        try:
            hook(batch)
        except Exception:
            log.exception("batch finish hook failed", extra={"batch_id": batch_id})
    return True


def _log_finish(batch: Batch) -> None:
    """The batch's JobLog row, written in the finishing transaction (so exactly once)."""
    top = (BatchItem.select(BatchItem.error_code).where((BatchItem.batch == batch.id) & (BatchItem.status == "failed"))
           .group_by(BatchItem.error_code).order_by(fn.COUNT(BatchItem.id).desc()).limit(1).scalar())
    kind = kind_of(batch)
    JobLog.create(
        run_id=os.urandom(8).hex(), job_class="batch", message_id=batch.id,
        queue=kind.actor.queue_name if kind else "batches",
        status="failed" if batch.failed or batch.status == "failed" else "success",
        error_code=top,
        message=(f"batch {batch.id} ({batch.kind}: {batch.title[:200]}) {status_label(batch)}: "
                 f"{batch.succeeded} succeeded, {batch.failed} failed, {batch.cancelled} cancelled of {batch.total}; "
                 f"{usd(batch.cost_usd)}, {batch.tokens} tokens"),
        args=f'{{"batch": "{batch.id}"}}', trace_id=trace.trace_id(), worker=f"{socket.gethostname()}:{os.getpid()}",
        duration_seconds=(batch.finished_at - batch.started_at).total_seconds() if batch.started_at else None,
        created_at=batch.finished_at, finished_at=batch.finished_at,
    )


# -- operator actions -------------------------------------------------------------------------

def cancel(batch_id: str) -> int:
    """Pending items become cancelled (running ones finish); the batch is `cancelled` and ends
    when its last running item does. Returns the items cancelled."""
    with _locked(batch_id) as batch:
        if batch is None:
            raise FleetError(f"no batch with id {batch_id}")
        if batch.finished_at is not None or batch.status == "cancelled":
            return 0
        cancelled = (BatchItem.update(status="cancelled", finished_at=utcnow())
                     .where((BatchItem.batch == batch_id) & (BatchItem.status == "pending")).execute())
        Batch.update(status="cancelled", cancelled=Batch.cancelled + cancelled).where(Batch.id == batch_id).execute()
    log.info("batch cancelled", extra={"batch_id": batch_id, "items_cancelled": cancelled})
    finish_if_done(batch_id)
    return cancelled


def _open_chunks(batch: Batch) -> list[int]:
    number = BatchItem.position / batch.chunk_size  # integer division on SQLite and PostgreSQL
    rows = (BatchItem.select(number.alias("n")).where((BatchItem.batch == batch.id) & BatchItem.status.in_(BatchItem.OPEN))
            .group_by(number).order_by(number).tuples())
    return [int(n) for n, in rows]


def _in_flight(kind: Kind, batch_id: str, numbers: list[int]) -> set[int]:
    """Chunks whose job is queued, delayed or running: their unique lock is held by a live message."""
    client = state_redis()
    if client is None:
        raise FleetError("resuming a batch needs the state Redis to tell queued chunks from lost ones: "
                         "set FLEET_STATE_REDIS_URL")
    held = live_holders(kind.actor.broker, [_lock_key(kind, batch_id, n) for n in numbers])
    return {n for n, h in zip(numbers, held) if h}  # a stale lock (its job lost) is not in flight


@dataclass
class Resumed:
    sent: int = 0  # chunk jobs sent again (each takes over what its lost job left running)
    in_flight: int = 0  # chunks with open items whose job is queued or running
    finished: bool = False  # nothing was open: the batch finished now


def resume(batch_id: str) -> Resumed:
    """Send again every chunk with open items and no queued or running job."""
    batch = Batch.get_or_none(Batch.id == batch_id)
    if batch is None:
        raise FleetError(f"no batch with id {batch_id}")
    report = Resumed()
    if batch.finished_at is not None:
        return report
    kind = kind_of(batch)
    if kind is None:
        _fail_unknown_kind(batch)
        report.finished = True
        return report
    numbers = _open_chunks(batch)
    if not numbers:
        report.finished = finish_if_done(batch_id)
        return report
    held = _in_flight(kind, batch_id, numbers)
    lost = [n for n in numbers if n not in held]
    report.in_flight = len(held)
    if lost:
        report.sent, _ = kind.actor.send_many((batch_id, n) for n in lost)
    log.info("batch resumed", extra={"batch_id": batch_id, "chunks_sent": report.sent, "chunks_in_flight": report.in_flight})
    return report


def _fail_unknown_kind(batch: Batch) -> None:
    """A batch of a kind no longer known cannot run: its open items fail and so does the batch."""
    message = f"no handler for batch kind {batch.kind!r} in this version of Fleet"
    with _locked(batch.id):
        BatchItem.update(status="failed", owner=None, error_code="ERR_INTERNAL", error_message=message,
                         finished_at=utcnow()).where((BatchItem.batch == batch.id) & BatchItem.status.in_(BatchItem.OPEN)).execute()
        Batch.update(status="failed").where((Batch.id == batch.id) & Batch.finished_at.is_null()).execute()
    finish_if_done(batch.id)


def retry(batch_id: str) -> int:
    """Failed items back to pending (their chunks' counters corrected) and their chunks sent
    again; the same batch, open again until they end. Returns the items retried."""
    with _locked(batch_id) as batch:
        if batch is None:
            raise FleetError(f"no batch with id {batch_id}")
        if batch.status == "cancelled":
            raise FleetError(f"batch {batch_id} was cancelled; nothing retried")
        number = BatchItem.position / batch.chunk_size
        per_chunk = list(BatchItem.select(number, fn.COUNT(BatchItem.id))
                         .where((BatchItem.batch == batch_id) & (BatchItem.status == "failed"))
                         .group_by(number).tuples())
        if not per_chunk:
            return 0
        BatchItem.update(status="pending", owner=None, result=None, error_code=None, error_message=None,
                         finished_at=None).where((BatchItem.batch == batch_id) & (BatchItem.status == "failed")).execute()
        for n, count in per_chunk:
            BatchChunk.update(processed=BatchChunk.processed - count, failed=BatchChunk.failed - count).where(
                _chunk_row(batch_id, int(n))).execute()
        Batch.update(status="processing", finished_at=None).where(Batch.id == batch_id).execute()
    kind = kind_of(batch)
    if kind is None:
        _fail_unknown_kind(batch)
    else:
        kind.actor.send_many((batch_id, int(n)) for n, _ in per_chunk)
    retried = sum(count for _, count in per_chunk)
    log.info("batch retried", extra={"batch_id": batch_id, "items_retried": retried})
    return retried


# -- reading ----------------------------------------------------------------------------------

def find_batch(ref: str) -> Batch:
    """A batch by its id or an unambiguous prefix of it (at least 4 characters)."""
    ref = (ref or "").strip().lower()
    found = Batch.get_or_none(Batch.id == ref)
    if found is None and len(ref) >= MIN_PREFIX:
        matches = list(Batch.select().where((Batch.id >= ref) & (Batch.id < ref + "~")).limit(2))
        if len(matches) > 1:
            raise FleetError(f"batch id {ref} is ambiguous; give more of it")
        found = matches[0] if matches else None
    if found is None:
        raise FleetError(f"no batch with id {ref}")
    return found


def usd(amount: float) -> str:
    """Money as operators read it: AI calls cost fractions of a cent."""
    return f"${amount:.6f}" if amount < 1 else f"${amount:,.2f}"


def status_label(batch: Batch) -> str:
    if batch.status == "completed" and batch.failed:
        return f"completed with {batch.failed} failure{'s' if batch.failed != 1 else ''}"
    if batch.status == "cancelled" and batch.finished_at is None:
        return "cancelling"
    return batch.status


def live_totals(batches: Iterable[Batch]) -> None:
    """Put the running counters (the sums of their chunk rows) on unfinished batches."""
    running = {b.id: b for b in batches if b.finished_at is None}
    if not running:
        return
    rows = (BatchChunk.select(BatchChunk.batch, fn.SUM(BatchChunk.processed), fn.SUM(BatchChunk.succeeded),
                              fn.SUM(BatchChunk.failed), fn.SUM(BatchChunk.cost_usd), fn.SUM(BatchChunk.tokens))
            .where(BatchChunk.batch.in_(list(running))).group_by(BatchChunk.batch).tuples())
    for batch_id, processed, succeeded, failed, cost, tokens in rows:
        b = running[batch_id]
        b.processed, b.succeeded, b.failed = int(processed or 0), int(succeeded or 0), int(failed or 0)
        b.cost_usd, b.tokens = float(cost or 0), int(tokens or 0)
    for b in running.values():
        b.current_item = (BatchChunk.select(BatchChunk.current_item)
                          .where((BatchChunk.batch == b.id) & BatchChunk.current_item.is_null(False))
                          .order_by(BatchChunk.touched_at.desc()).limit(1).scalar())


def list_batches(status: str | None = None, limit: int = 50, offset: int = 0) -> list[Batch]:
    query = Batch.select().order_by(Batch.created_at.desc(), Batch.id)
    if status:
        query = query.where(Batch.status == status)
    batches = list(query.offset(offset).limit(limit))
    live_totals(batches)
    return batches


def items(batch_id: str, status: str | None = None, offset: int = 0, limit: int | None = 50) -> list[BatchItem]:
    """A page of the batch's items in position order (all of them when `limit` is None)."""
    query = BatchItem.select().where(BatchItem.batch == batch_id)
    if status:
        query = query.where(BatchItem.status == status)
    query = query.order_by(BatchItem.position).offset(offset)
    return list(query if limit is None else query.limit(limit))


def errors(batch_id: str) -> list[dict]:
    """Failed items by error code, most frequent first, with the code's sentence."""
    rows = (BatchItem.select(BatchItem.error_code, fn.COUNT(BatchItem.id).alias("n"))
            .where((BatchItem.batch == batch_id) & (BatchItem.status == "failed"))
            .group_by(BatchItem.error_code).order_by(SQL("n").desc()).tuples())
    return [{"code": code, "sentence": CODES[code].sentence if code in CODES else "", "count": n} for code, n in rows]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") + "Z" if value else None


def item_dict(item: BatchItem) -> dict:
    return {"position": item.position, "key": item.key, "status": item.status, "attempts": item.attempts,
            "result": item.result, "error_code": item.error_code, "error_message": item.error_message,
            "cost_usd": round(item.cost_usd, 6), "tokens": item.tokens,
            "started_at": _iso(item.started_at), "finished_at": _iso(item.finished_at)}


@dataclass
class Snapshot:
    batch: Batch
    errors: list[dict] = field(default_factory=list)
    items: list[BatchItem] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.batch.finished_at is not None

    @property
    def percent(self) -> float:
        b = self.batch
        return 100.0 if b.total and b.processed >= b.total else (int(1000 * b.processed / b.total) / 10 if b.total else 0.0)

    @property
    def rate(self) -> float | None:
        """Items a second since the batch started."""
        b = self.batch
        if not b.started_at or not b.processed:
            return None
        elapsed = ((b.finished_at or utcnow()) - b.started_at).total_seconds()
        return b.processed / elapsed if elapsed > 0 else None

    @property
    def eta_seconds(self) -> float | None:
        b = self.batch
        if self.finished or not self.rate:
            return None
        return max(0, b.total - b.processed - b.cancelled) / self.rate

    def as_dict(self) -> dict:
        b = self.batch
        kind = kind_of(b)
        return {
            "id": b.id, "kind": b.kind, "kind_label": kind.label if kind else b.kind, "title": b.title,
            "status": b.status, "status_label": status_label(b), "finished": self.finished,
            "total": b.total, "processed": b.processed, "succeeded": b.succeeded, "failed": b.failed,
            "cancelled": b.cancelled, "percent": self.percent, "current_item": b.current_item,
            "rate_per_second": round(self.rate, 3) if self.rate else None,
            "eta_seconds": round(self.eta_seconds) if self.eta_seconds is not None else None,
            "cost_usd": round(b.cost_usd, 6), "tokens": b.tokens, "chunk_size": b.chunk_size, "options": b.options,
            "created_by": b.created_by, "created_at": _iso(b.created_at), "started_at": _iso(b.started_at),
            "finished_at": _iso(b.finished_at), "errors": self.errors, "items": [item_dict(i) for i in self.items],
        }


def snapshot(batch_id: str, *, item_status: str | None = None, offset: int = 0, limit: int | None = 50) -> Snapshot:
    """What the detail page, the API and `fleet batches show` report about one batch, with a
    page of its items (none when `limit` is 0, all when it is None)."""
    batch = find_batch(batch_id)
    live_totals([batch])
    page = items(batch.id, item_status, offset, limit) if limit != 0 else []
    return Snapshot(batch, errors(batch.id), page)


# -- maintenance ------------------------------------------------------------------------------

@task("batches.resume-stale")
@fleet_actor(queue_name="maintenance", retry_delays=())
def resume_stale_batches(minutes: float = 5) -> None:
    """Resume every unfinished batch older than `minutes`: chunks with open items and no queued
    or running job (a lost message, a worker gone for good) are sent again, and batches whose
    last item ended without finishing them finish."""
    cutoff = utcnow() - timedelta(minutes=minutes)
    stale = [b.id for b in Batch.select(Batch.id).where(Batch.finished_at.is_null() & (Batch.created_at <= cutoff))]
    for batch_id in stale:
        try:
            resume(batch_id)
        except FleetError as exc:
            log.warning("batch not resumed", extra={"batch_id": batch_id, "reason": str(exc)})
            return


def prune(days: float = PRUNE_DAYS, keep: int = PRUNE_KEEP) -> int:
    """Delete finished batches older than `days` with their items, never the newest `keep`."""
    cutoff = utcnow() - timedelta(days=days)
    newest = [b.id for b in Batch.select(Batch.id).order_by(Batch.created_at.desc()).limit(keep)] if keep else []
    old = list(Batch.select().where(Batch.finished_at.is_null(False) & (Batch.finished_at < cutoff)
                                    & Batch.id.not_in(newest or [""])))
    for batch in old:
        with database.atomic():
            BatchItem.delete().where(BatchItem.batch == batch.id).execute()
            BatchChunk.delete().where(BatchChunk.batch == batch.id).execute()
            Batch.delete().where(Batch.id == batch.id).execute()
        kind = kind_of(batch)
        if kind and kind.on_prune:
            kind.on_prune(batch)
    return len(old)
