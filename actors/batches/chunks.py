"""The chunk job: claims a chunk's items, runs the kind's handler, settles them with its counters."""
from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from actors.batches.finish import finish_if_done
from actors.batches.kinds import KINDS, ItemRun, Kind
from actors.middleware.unique import holder_of, unique_key
from actors.runtime import fleet_actor
from core import fencing, trace
from core.errors import Classified, classify
from core.redact import redact
from core.settings import MAX_BATCH_CHUNK
from core.state import state_redis
from db.database import database
from db.models import utcnow
from db.models.batches import Batch, BatchChunk, BatchItem

log = logging.getLogger("fleet.batches")

MAX_MESSAGE = 2_000


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


def _chunk_items(batch: Batch, number: int):
    low = number * batch.chunk_size
    return (BatchItem.batch == batch.id) & (BatchItem.position >= low) & (BatchItem.position < low + batch.chunk_size)


def chunk_row(batch_id: str, number: int):
    return (BatchChunk.batch == batch_id) & (BatchChunk.number == number)


def _claimable(owner: str, takes_over: bool = False):
    """pending, or running under this message (redelivered after its worker died); with
    `takes_over`, running under any message (see `holds_chunk`)."""
    running = BatchItem.status == "running"
    return (BatchItem.status == "pending") | (running if takes_over else running & (BatchItem.owner == owner))


def chunk_lock_key(kind: Kind, batch_id: str, number: int) -> str:
    return unique_key(kind.actor.actor_name, [batch_id, number], {})


def holds_chunk(kind: Kind, batch_id: str, number: int, owner: str) -> bool:
    """Does this message hold its chunk's unique lock? Then no other job works the chunk, and
    items another message left running were left by a job that is gone."""
    client = state_redis()
    return client is not None and holder_of(client.get(chunk_lock_key(kind, batch_id, number))) == owner


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
        try:
            while True:
                fencing.check()  # a stale copy (its message was redelivered) claims no more items
                group = self._commit(claim=size)
                if not group:
                    break
                started = time.monotonic()
                if self.kind.many:
                    self._work_together(group)
                else:
                    self._work_each(group, started)
                quick = time.monotonic() - started < self.GROUP_WINDOW
                size = min(size * 2, MAX_BATCH_CHUNK) if quick else 1
        except fencing.StaleDelivery:
            # The message was redelivered: what this copy finished is kept (an item the new copy
            # finished first is left as it is), the rest is the new copy's.
            self._commit()
            raise

    def _work_each(self, group: list[BatchItem], started: float) -> None:
        for n, item in enumerate(group):
            if n:
                fencing.check()  # a stale copy stops before its next item (the first was checked before the claim)
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
                BatchChunk.update(**counters).where(chunk_row(self.batch.id, self.number)).execute()
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
                              current_item=None, touched_at=now).where(chunk_row(batch_id, number)).execute()
    log.warning("batch chunk gave up", extra={"batch_id": batch_id, "chunk": number, "items_failed": failed,
                                              "error_code": error.code.code})
    return failed
