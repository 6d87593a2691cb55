"""What is done to batches: create, cancel, resume, retry, and the periodic resume and prune."""
from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from peewee import fn

from actors.batches.chunks import chunk_lock_key, chunk_row
from actors.batches.economy import cancel_provider_batches, check_lane, submit, submit_economy_batch
from actors.batches.finish import finish_if_done, locked_batch
from actors.batches.kinds import KINDS, Kind, kind_of
from actors.batches.views import status_label
from actors.middleware.unique import live_holders
from actors.outbox import Outbox, outbox
from actors.runtime import fleet_actor, task
from core.errors import FleetError
from core.settings import MAX_BATCH_CHUNK, get_settings
from core.state import state_redis
from db.database import database
from db.models import utcnow
from db.models.batches import Batch, BatchChunk, BatchItem, ProviderBatch

log = logging.getLogger("fleet.batches")

INSERT_ROWS = 1_000  # item rows an INSERT
PRUNE_DAYS, PRUNE_KEEP = 30, 100


def create_batch(kind: str, title: str, keys: Sequence[str], *, options: dict | None = None,
                 created_by: str | None = None, chunk_size: int | None = None, lane: str | None = None) -> Batch:
    """Write the batch, an item a key, a counter row a chunk and the chunk jobs (to the outbox)
    in one transaction, then send the chunk jobs (pipelined). NotSent when Redis refused them:
    the batch stays `queued` and the scheduler sends them from the outbox. On the economy `lane`
    (default FLEET_AI_LANE for a kind that has one) one job sends the items to OpenAI's Batch
    API instead of the chunk jobs."""
    found = KINDS.get(kind)
    if found is None:
        raise FleetError(f"unknown batch kind {kind!r}", exit_code=2)
    if not keys:
        raise FleetError("a batch needs at least one item", exit_code=2)
    lane = check_lane(kind, lane)
    size = chunk_size or get_settings().batch_chunk
    if not 1 <= size <= MAX_BATCH_CHUNK:
        raise FleetError(f"a chunk holds 1 to {MAX_BATCH_CHUNK} items, not {size}", exit_code=2)
    batch_id = str(uuid.uuid4())
    chunks = (len(keys) + size - 1) // size
    now = utcnow()
    with outbox(f"Batch {batch_id} ({len(keys)} item(s))") as box:
        Batch.insert(id=batch_id, kind=kind, title=title, status="queued", total=len(keys), chunk_size=size,
                     options=options or {}, created_by=created_by, created_at=now, lane=lane).execute()
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
        if lane == "economy":
            box.add(submit_economy_batch, batch_id)
        else:
            box.add_many(found.actor, [(batch_id, n) for n in range(chunks)])
    log.info("batch created", extra={"batch_id": batch_id, "kind": kind, "items": len(keys), "chunks": chunks,
                                     "lane": lane})
    return Batch.get_by_id(batch_id)


def cancel(batch_id: str) -> int:
    """Pending items become cancelled (running ones finish); the batch is `cancelled` and ends
    when its last running item does. Returns the items cancelled."""
    with locked_batch(batch_id) as batch:
        if batch is None:
            raise FleetError(f"no batch with id {batch_id}")
        if batch.finished_at is not None or batch.status == "cancelled":
            return 0
        cancelled = (BatchItem.update(status="cancelled", finished_at=utcnow())
                     .where((BatchItem.batch == batch_id) & (BatchItem.status == "pending")).execute())
        Batch.update(status="cancelled", cancelled=Batch.cancelled + cancelled).where(Batch.id == batch_id).execute()
    if batch.lane == "economy":  # what the provider finished is still settled; the rest is cancelled
        cancel_provider_batches(batch_id)
    log.info("batch cancelled", extra={"batch_id": batch_id, "items_cancelled": cancelled})
    finish_if_done(batch_id)
    return cancelled


def cancelled_text(cancelled: int, batch_id: str | None = None) -> str:
    return f"Cancelled {cancelled} pending item(s){_of(batch_id)}; running items finish."


def _name(batch_id: str | None) -> str:
    return f"Batch {batch_id}" if batch_id else "The batch"


def _of(batch_id: str | None) -> str:
    return f" of batch {batch_id}" if batch_id else ""


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
    held = live_holders(kind.actor.broker, [chunk_lock_key(kind, batch_id, n) for n in numbers])
    return {n for n, h in zip(numbers, held) if h}  # a stale lock (its job lost) is not in flight


@dataclass
class Resumed:
    sent: int = 0  # chunk jobs sent again (each takes over what its lost job left running)
    in_flight: int = 0  # chunks with open items whose job is queued or running
    finished: bool = False  # nothing was open: the batch finished now
    was_finished: str | None = None  # the batch had finished before: its status

    def text(self, batch_id: str | None = None) -> str:
        """What the operator is told: the CLI names the batch, the panel is on its page."""
        if self.was_finished:
            return f"{_name(batch_id)} is {self.was_finished}; nothing to resume."
        if self.finished:
            return f"{_name(batch_id)} had no open item left; it is finished now."
        return (f"Sent {self.sent} lost chunk job(s){_of(batch_id)} again; "
                f"{self.in_flight} chunk(s) still queued or running.")


def resume(batch_id: str) -> Resumed:
    """Send again every chunk with open items and no queued or running job."""
    batch = Batch.get_or_none(Batch.id == batch_id)
    if batch is None:
        raise FleetError(f"no batch with id {batch_id}")
    report = Resumed()
    if batch.finished_at is not None:
        report.was_finished = status_label(batch)
        return report
    kind = kind_of(batch)
    if kind is None:
        _fail_unknown_kind(batch)
        report.finished = True
        return report
    if batch.lane == "economy":  # pending items to the provider; the poll looks after the rest
        report.sent = submit(batch_id)
        report.finished = finish_if_done(batch_id)
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
    with locked_batch(batch.id):
        BatchItem.update(status="failed", owner=None, error_code="ERR_INTERNAL", error_message=message,
                         finished_at=utcnow()).where((BatchItem.batch == batch.id) & BatchItem.status.in_(BatchItem.OPEN)).execute()
        Batch.update(status="failed").where((Batch.id == batch.id) & Batch.finished_at.is_null()).execute()
    finish_if_done(batch.id)


def retry(batch_id: str) -> int:
    """Failed items back to pending (their chunks' counters corrected) and their chunks sent
    again; the same batch, open again until they end. Returns the items retried."""
    box = Outbox(f"Batch {batch_id}: its failed items set back to pending")  # sent once locked_batch commits
    with locked_batch(batch_id) as batch:
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
        fresh = {"attempts": 0} if batch.lane == "economy" else {}  # a new retry budget at the provider
        BatchItem.update(status="pending", owner=None, result=None, error_code=None, error_message=None,
                         finished_at=None, **fresh).where((BatchItem.batch == batch_id) & (BatchItem.status == "failed")).execute()
        for n, count in per_chunk:
            BatchChunk.update(processed=BatchChunk.processed - count, failed=BatchChunk.failed - count).where(
                chunk_row(batch_id, int(n))).execute()
        Batch.update(status="processing", finished_at=None).where(Batch.id == batch_id).execute()
        kind = kind_of(batch)
        if kind is not None and batch.lane == "economy":
            box.add(submit_economy_batch, batch_id)
        elif kind is not None:
            box.add_many(kind.actor, [(batch_id, int(n)) for n, _ in per_chunk])
    box.send()
    if kind is None:
        _fail_unknown_kind(batch)
    retried = sum(count for _, count in per_chunk)
    log.info("batch retried", extra={"batch_id": batch_id, "items_retried": retried})
    return retried


def retried_text(retried: int, batch_id: str | None = None) -> str:
    return (f"Retrying {retried} failed item(s){_of(batch_id)}." if retried
            else f"{_name(batch_id)} has no failed item; nothing retried.")


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
            ProviderBatch.delete().where(ProviderBatch.batch == batch.id).execute()
            Batch.delete().where(Batch.id == batch.id).execute()
        kind = kind_of(batch)
        if kind and kind.on_prune:
            kind.on_prune(batch)
    return len(old)
