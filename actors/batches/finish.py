"""Finishing a batch: once a run of it, under the batch row's lock, with its JobLog row and hooks."""
from __future__ import annotations

import contextlib
import logging
import os

from peewee import SqliteDatabase, fn

from actors.batches.kinds import FINISH_HOOKS, kind_of
from actors.batches.views import outcome_text, status_label
from core import trace
from core.identity import process_id
from db.database import database
from db.models import utcnow
from db.models.batches import Batch, BatchItem
from db.models.jobs import JobLog

log = logging.getLogger("fleet.batches")


@contextlib.contextmanager
def locked_batch(batch_id: str):
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
    with locked_batch(batch_id) as batch:
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
        message=f"batch {batch.id} ({batch.kind}: {batch.title[:200]}) {status_label(batch)}: {outcome_text(batch)}",
        args=f'{{"batch": "{batch.id}"}}', trace_id=trace.trace_id(), worker=process_id(),
        duration_seconds=(batch.finished_at - batch.started_at).total_seconds() if batch.started_at else None,
        created_at=batch.finished_at, finished_at=batch.finished_at,
    )
