"""What operators read of batches: lookups, labels, live totals and the snapshot the CLI, API and panel show."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from peewee import SQL, fn

from actors.batches.kinds import kind_of
from core.errors import CODES, FleetError
from db.models import utcnow
from db.models.batches import Batch, BatchChunk, BatchItem, ProviderBatch

SHORT_ID = 8  # characters of a batch id shown in lists
MIN_PREFIX = 4  # shortest id prefix the CLI resolves


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


def outcome_text(batch: Batch) -> str:
    """`3 succeeded, 1 failed, 0 cancelled of 4; $0.000120, 80 tokens`: the CLI's last line and the JobLog row's."""
    return (f"{batch.succeeded} succeeded, {batch.failed} failed, {batch.cancelled} cancelled of {batch.total}; "
            f"{usd(batch.cost_usd)}, {batch.tokens} tokens")


LANE_LABELS = {"live": "live", "economy": "economy (Batch API, ½ price, ≤ 24 h)"}


def lane_label(batch: Batch) -> str:
    return LANE_LABELS.get(batch.lane, batch.lane)


def saved_usd(batch: Batch) -> float:
    """What the economy lane saved against the live lane: the Batch API costs half, so as much as it cost."""
    return batch.cost_usd if batch.lane == "economy" else 0.0


def provider_batches(batch_id: str) -> list[dict]:
    """The provider batches of an economy batch, oldest first: their status and the provider's counts."""
    rows = ProviderBatch.select().where(ProviderBatch.batch == batch_id).order_by(ProviderBatch.id)
    return [{"provider_id": r.provider_id, "status": r.status, "provider_status": r.provider_status,
             "items": r.items, "requests": r.requests, "request_counts": r.request_counts, "error": r.error,
             "submitted_at": _iso(r.submitted_at), "ended_at": _iso(r.ended_at)} for r in rows]


def economy_text(batch: Batch) -> str | None:
    """`provider: in_progress 12/60 (0 failed); $0.0012 (live $0.0024, saved $0.0012)` of an
    economy batch, None of a live one. The open provider batches, or the last one."""
    if batch.lane != "economy":
        return None
    rows = provider_batches(batch.id)
    open_rows = [r for r in rows if r["status"] != "settled"] or rows[-1:]
    parts = []
    for r in open_rows:
        counts = r["request_counts"] or {}
        state = r["provider_status"] or r["status"]
        parts.append(f"{state} {counts.get('completed', 0)}/{counts.get('total', r['requests'])}"
                     f" ({counts.get('failed', 0)} failed)" if counts else state)
    provider = ", ".join(parts) or "not sent yet"
    cost = batch.cost_usd
    return f"provider: {provider}; {usd(cost)} (live {usd(2 * cost)}, saved {usd(saved_usd(batch))})"


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
    provider: bool = True  # an economy batch's provider batches too (a list of batches leaves them out: one query each)

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
            "lane": b.lane, "saved_usd": round(saved_usd(b), 6),
            "provider_batches": provider_batches(b.id) if b.lane == "economy" and self.provider else [],
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
