"""The economy lane: a batch's items sent to OpenAI's Batch API, at half the price, within 24 h.

Sending is written to the ledger before anything leaves: a `ProviderBatch` row is created and
the items are assigned to it (`running`, `provider_batch` = the row) in one transaction; then the
JSONL file (a line an ask: `custom_id` is the item's id, `<id>.<n>` for an item of several
asks; the body built by `chat_request`, as a live call's) is uploaded and the provider batch
created with the row's id in its metadata. A sender that dies on the way leaves the row
`preparing`: the next poll sends it again, adopting the provider batch if the create had got
through (found by its metadata), so an item is never in two provider batches at once.

Results come back through `economy_results` (the scheduled poll), which settles each item
through `settle_item` here: one guarded transaction per item, so none is settled twice.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from actors.batches.chunks import chunk_row
from actors.batches.finish import finish_if_done, locked_batch
from actors.batches.kinds import Ask, ItemRun, kind_of
from actors.runtime import fleet_actor
from core import spend
from core.budget import Deferred
from core.errors import Classified, FleetError, classify
from core.locks import RedisLock
from core.redact import redact
from core.settings import get_settings
from core.state import state_redis
from db.database import database
from db.models import utcnow
from db.models.batches import Batch, BatchChunk, BatchItem, ProviderBatch

log = logging.getLogger("fleet.batches.economy")

MAX_MESSAGE = 2_000
LIVE = 0  # `BatchItem.provider_batch` of an item handed to the live lane (option `economy_retry: live`)
SEND_LOCK_TTL = 600  # seconds a sender holds a ledger row while it uploads and creates


def custom_id(item_id: int, n: int, count: int) -> str:
    return str(item_id) if count == 1 else f"{item_id}.{n}"


def item_of(custom: str) -> tuple[int, int] | None:
    """(item id, ask number) of a custom_id, or None if it is none of ours."""
    head, _, tail = custom.partition(".")
    if not head.isdigit() or (tail and not tail.isdigit()):
        return None
    return int(head), int(tail or 0)


def check_lane(kind_name: str, lane: str | None) -> str:
    """The lane a new batch of `kind_name` runs on: `lane`, or FLEET_AI_LANE for a kind that can
    run on both; FleetError (exit 2) for a lane the kind cannot run on."""
    from actors.batches.kinds import KINDS

    kind = KINDS.get(kind_name)
    chosen = lane or (get_settings().ai_lane if kind is not None and kind.economy else "live")
    if chosen not in ("live", "economy"):
        raise FleetError(f"--lane {chosen!r} is not one of live, economy", exit_code=2)
    if chosen == "economy" and (kind is None or kind.economy is None):
        raise FleetError(f"a {kind_name} batch cannot run on the economy lane", exit_code=2)
    return chosen


def max_attempts() -> int:
    """Provider batches an item may go through before its failure is final: the retry budget."""
    return 1 + len(get_settings().retry_delays)


# -- settling one item -----------------------------------------------------------------------------

@dataclass
class Settled:
    status: str  # succeeded | failed | pending (handed back: sent again) | cancelled
    result: dict | None = None
    error: Classified | None = None
    cost_usd: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    counts_attempt: bool = True  # False: the provider never tried it (expired, cancelled batch)
    live: bool = False  # pending for the live lane, not for the next provider batch


def settle_item(item: BatchItem, row_id: int, outcome: Settled, job_class: str | None) -> bool:
    """`settle_items` of one item: True if this call settled it."""
    return settle_items([(item, outcome)], row_id, job_class) == 1


def settle_items(outcomes: list[tuple[BatchItem, Settled]], row_id: int, job_class: str | None) -> int:
    """The items' outcomes, their chunks' counters and the day's spend (`job_class`; None when the
    live client recorded it) in one transaction, each item only if it is still held by provider
    batch `row_id` (LIVE: by the live lane); how many this call settled (no other call settles them)."""
    now = utcnow()
    chunks: dict[int, dict] = {}
    spent = {"usd": 0.0, "prompt_tokens": 0, "completion_tokens": 0, "requests": 0}
    settled = 0
    with database.atomic():
        for item, outcome in outcomes:
            if not _settle_one(item, row_id, outcome, now):
                continue
            settled += 1
            batch = item.batch
            totals = chunks.setdefault(item.position // batch.chunk_size, {"processed": 0, "succeeded": 0, "failed": 0,
                                                                           "cost_usd": 0.0, "tokens": 0})
            totals["cost_usd"] += outcome.cost_usd
            totals["tokens"] += outcome.prompt_tokens + outcome.completion_tokens
            if outcome.status in ("succeeded", "failed"):
                totals["processed"] += 1
                totals[outcome.status] += 1
            if outcome.status == "cancelled":
                Batch.update(cancelled=Batch.cancelled + 1).where(Batch.id == batch.id).execute()
            if outcome.cost_usd or outcome.prompt_tokens:
                spent["usd"] += outcome.cost_usd
                spent["prompt_tokens"] += outcome.prompt_tokens
                spent["completion_tokens"] += outcome.completion_tokens
                spent["requests"] += 1
        for number, totals in chunks.items():
            batch_id = outcomes[0][0].batch.id
            BatchChunk.update(touched_at=now, **{name: getattr(BatchChunk, name) + value for name, value in totals.items()}
                              ).where(chunk_row(batch_id, number)).execute()
        if job_class and spent["requests"]:
            spend.record(spent["usd"], spent["prompt_tokens"], spent["completion_tokens"], job_class, spent["requests"])
    return settled


def _settle_one(item: BatchItem, row_id: int, outcome: Settled, now) -> bool:
    error = outcome.error
    final = outcome.status in ("succeeded", "failed", "cancelled")
    fields = {"status": outcome.status, "owner": None, "provider_batch": LIVE if outcome.live else None,
              "result": outcome.result,
              "cost_usd": BatchItem.cost_usd + outcome.cost_usd,
              "tokens": BatchItem.tokens + outcome.prompt_tokens + outcome.completion_tokens,
              "finished_at": now if final else None,
              "error_code": error.code.code if error else None,
              "error_message": redact(error.message)[:MAX_MESSAGE] if error else None}
    if not outcome.counts_attempt:
        fields["attempts"] = BatchItem.attempts - 1
    return bool(BatchItem.update(**fields).where((BatchItem.id == item.id) & (BatchItem.status == "running")
                                                 & (BatchItem.provider_batch == row_id)).execute())


def failed_attempt(item: BatchItem, batch: Batch, error: Classified, **paid) -> Settled:
    """An attempt that brought no usable answer: sent again while the budget lasts and the error
    can pass (a provider failure, an unusable answer), or, with the batch's option
    `economy_retry: live`, handed to the live lane; else the item fails with its code."""
    again = error.retryable or error.code.code == "ERR_INVALID_RESPONSE"
    if batch.status == "cancelled":
        return Settled("cancelled", error=error, **paid)
    if again and (batch.options or {}).get("economy_retry") == "live":
        return Settled("pending", error=error, live=True, **paid)
    if again and item.attempts < max_attempts():
        return Settled("pending", error=error, **paid)
    return Settled("failed", error=error, **paid)


# -- sending ---------------------------------------------------------------------------------------

def _claim(batch: Batch, limit: int) -> tuple[ProviderBatch | None, list[BatchItem]]:
    """A new ledger row holding up to `limit` pending items of the batch, in one transaction that
    holds the batch row (on SQLite a write transaction from its start: a read that turns into a
    write could meet another writer and fail at once with "database is locked")."""
    with locked_batch(batch.id):
        ids = [i for i, in BatchItem.select(BatchItem.id).where(
            (BatchItem.batch == batch.id) & (BatchItem.status == "pending") & BatchItem.provider_batch.is_null())
            .order_by(BatchItem.position).limit(limit).tuples()]
        if not ids:
            return None, []
        row = ProviderBatch.create(batch=batch.id, status="preparing", items=0, requests=0, bytes=0)
        now = utcnow()
        (BatchItem.update(status="running", owner=f"economy:{row.id}", provider_batch=row.id, started_at=now,
                          finished_at=None, attempts=BatchItem.attempts + 1)
         .where(BatchItem.id.in_(ids) & (BatchItem.status == "pending") & BatchItem.provider_batch.is_null()).execute())
        if batch.status == "queued":
            Batch.update(status="processing", started_at=now).where(
                (Batch.id == batch.id) & (Batch.status == "queued")).execute()
    return row, held_items(row.id)


def held_items(row_id: int) -> list[BatchItem]:
    return list(BatchItem.select().where((BatchItem.provider_batch == row_id) & (BatchItem.status == "running"))
                .order_by(BatchItem.position))


def _lines(batch: Batch, items: list[BatchItem], row_id: int) -> tuple[list[bytes], list[BatchItem]]:
    """The request lines of `items` within the provider's per-file limits, and the items they hold;
    an item whose asks cannot be made fails now; items beyond the limits are handed back."""
    from core.clients.openai_batch import MAX_FILE_BYTES, request_line
    from core.clients.openai_client import chat_request

    kind = kind_of(batch)
    model = get_settings().openai_model
    max_requests = get_settings().economy_file_requests
    lines: list[bytes] = []
    size = 0
    sent: list[BatchItem] = []
    for n, item in enumerate(items):
        item.batch = batch
        run = ItemRun(batch, item, f"economy:{row_id}", item.position // batch.chunk_size)
        try:
            asks = kind.economy.asks(run)
            if not asks:  # nothing to ask (an empty file, a day generated meanwhile): done now
                settle_item(item, row_id, Settled("succeeded", result=kind.economy.settle(run, [])), None)
                continue
        except Exception as exc:
            settle_item(item, row_id, Settled("failed", error=classify(exc)), None)
            continue
        mine = [request_line(custom_id(item.id, k, len(asks)),
                             chat_request(model, a.system, a.prompt, a.schema, a.schema_name, a.max_completion_tokens))
                for k, a in enumerate(asks)]
        if lines and (len(lines) + len(mine) > max_requests or size + sum(map(len, mine)) > MAX_FILE_BYTES):
            for rest in items[n:]:
                rest.batch = batch
                settle_item(rest, row_id, Settled("pending", counts_attempt=False), f"economy:{batch.kind}")
            break
        lines += mine
        size += sum(map(len, mine))
        sent.append(item)
    return lines, sent


def asks_of(batch: Batch, item: BatchItem) -> list[Ask]:
    item.batch = batch
    return kind_of(batch).economy.asks(ItemRun(batch, item, "economy", item.position // batch.chunk_size))


def send(row: ProviderBatch, client=None) -> bool:
    """Upload and create the provider batch of a `preparing` ledger row (or adopt the one a dead
    sender created); True once the provider has it. Held by a lock on the row while it runs."""
    from core.clients.openai_batch import OpenAIBatchClient

    lock = RedisLock(state_redis(), f"fleet:economy:send:{row.id}", f"send-{utcnow().timestamp()}", SEND_LOCK_TTL)
    if not lock.acquire():
        return False
    try:
        row = ProviderBatch.get_by_id(row.id)
        if row.status != "preparing":
            return True
        batch = Batch.get_by_id(row.batch_id)
        if batch.status == "cancelled" and not row.input_file_id:  # cancelled before it left: nothing sent
            for item in held_items(row.id):
                item.batch = batch
                settle_item(item, row.id, Settled("cancelled", counts_attempt=False), None)
            ProviderBatch.update(status="settled", settled_at=utcnow()).where(ProviderBatch.id == row.id).execute()
            finish_if_done(batch.id)
            return True
        client = client or OpenAIBatchClient(get_settings())
        if row.input_file_id:
            found = client.find(row.id)
            if found is not None:
                return _submitted(row, found)
        lines, items = _lines(batch, held_items(row.id), row.id)
        if not lines:
            ProviderBatch.update(status="settled", settled_at=utcnow(), items=0).where(ProviderBatch.id == row.id).execute()
            finish_if_done(batch.id)
            return True
        content = b"".join(lines)
        file_id = client.upload(content, f"fleet-{batch.id}-{row.id}.jsonl")
        ProviderBatch.update(input_file_id=file_id, items=len(items), requests=len(lines), bytes=len(content)).where(
            ProviderBatch.id == row.id).execute()
        return _submitted(row, client.create(file_id, row.id))
    finally:
        lock.release()


def _submitted(row: ProviderBatch, found) -> bool:
    ProviderBatch.update(status="submitted", provider_id=found.id, provider_status=found.status, submitted_at=utcnow(),
                         request_counts=_counts(found)).where(ProviderBatch.id == row.id).execute()
    log.info("provider batch submitted", extra={"batch_id": row.batch_id, "provider_batch": found.id})
    return True


def _counts(found) -> dict | None:
    counts = getattr(found, "request_counts", None)
    return {"total": counts.total, "completed": counts.completed, "failed": counts.failed} if counts else None


def submit(batch_id: str, client=None) -> int:
    """Send every pending item of an economy batch not yet with the provider, in provider batches
    within the per-file limits; the provider batches created. Nothing is sent while the day's
    spend cap is reached (the next poll tries again)."""
    batch = Batch.get_or_none(Batch.id == batch_id)
    if batch is None or batch.lane != "economy" or batch.finished_at is not None or batch.status == "cancelled":
        return 0
    if kind_of(batch) is None or kind_of(batch).economy is None:
        return 0
    try:
        spend.check_cap()
    except Deferred as exc:
        log.info("economy batch waits for the spend cap", extra={"batch_id": batch_id, "reason": str(exc)})
        return 0
    created = 0
    while True:
        row, items = _claim(batch, get_settings().economy_file_requests)
        if row is None:
            break
        send(row, client)
        created += 1
    handed = [i for i, in BatchItem.select(BatchItem.id).where((BatchItem.batch == batch_id) & (BatchItem.status == "pending")
                                                               & (BatchItem.provider_batch == LIVE)).tuples()]
    run_item_live.send_many((batch_id, item_id) for item_id in handed)
    finish_if_done(batch_id)
    return created


@fleet_actor(queue_name="maintenance", retry_delays=(60, 300, 1800))
def submit_economy_batch(batch_id: str) -> None:
    """Send an economy batch's pending items to the provider (after it is created, retried)."""
    submit(batch_id)


def _live_gave_up(message, error: Classified) -> None:
    batch_id, item_id = message.args[:2]
    item = BatchItem.get_or_none(BatchItem.id == item_id)
    if item is not None:
        settle_item(item, LIVE, Settled("failed", error=error), None)
        finish_if_done(batch_id)


@fleet_actor(queue_name="maintenance", service="openai", unique=True, on_give_up=_live_gave_up)
def run_item_live(batch_id: str, item_id: int) -> None:
    """An economy item the provider could not do, on the live lane (the batch's option
    `economy_retry: live`): the kind's live handler, settled like the provider's answers. A
    retryable error is retried by the job (FLEET_RETRY_DELAYS); the item fails when it gives up."""
    batch = Batch.get_or_none(Batch.id == batch_id)
    now = utcnow()
    claimed = (BatchItem.update(status="running", owner=f"live:{item_id}", started_at=now, attempts=BatchItem.attempts + 1)
               .where((BatchItem.id == item_id) & (BatchItem.provider_batch == LIVE)
                      & BatchItem.status.in_(BatchItem.OPEN)).execute())
    if batch is None or not claimed:
        return
    item = BatchItem.get_by_id(item_id)
    item.batch = batch
    run = ItemRun(batch, item, f"live:{item_id}", item.position // batch.chunk_size)
    try:
        result = kind_of(batch).handle(run)
    except Exception as exc:
        error = classify(exc)
        if error.retryable and error.code.code != "ERR_INTERNAL":
            settle_item(item, LIVE, Settled("pending", error=error, cost_usd=run.cost_usd, prompt_tokens=run.tokens,
                                            live=True, counts_attempt=False), None)
            raise
        settle_item(item, LIVE, Settled("failed", error=error, cost_usd=run.cost_usd, prompt_tokens=run.tokens), None)
    else:
        settle_item(item, LIVE, Settled("succeeded", result=result, cost_usd=run.cost_usd, prompt_tokens=run.tokens),
                    None)
    finish_if_done(batch_id)


def cancel_provider_batches(batch_id: str, client=None) -> int:
    """Ask the provider to cancel every open provider batch of a Fleet batch; what they finished
    is still settled by the poll, the rest is cancelled. Returns the provider batches asked."""
    from core.clients.openai_batch import OpenAIBatchClient

    rows = list(ProviderBatch.select().where((ProviderBatch.batch == batch_id) & (ProviderBatch.status == "submitted")))
    asked = 0
    for row in rows:
        if row.provider_status in ProviderBatch.PROVIDER_FINAL:
            continue
        client = client or OpenAIBatchClient(get_settings())
        try:
            found = client.cancel(row.provider_id)
        except Exception as exc:
            log.warning("provider batch not cancelled", extra={"batch_id": batch_id, "provider_batch": row.provider_id,
                                                               "reason": str(exc)[:300]})
            continue
        ProviderBatch.update(provider_status=found.status).where(ProviderBatch.id == row.id).execute()
        asked += 1
    return asked
