"""The economy lane's poll: one scheduled task looks at every open provider batch, settles the
results of those the provider finished, sends what is pending, and finishes batches.

Settling a provider batch downloads its output and error files and settles each item it holds
through the code that settles a live answer (`usable_answer`: the schema and the kind's check,
e.g. a translation's placeholders and markup), the kind's `settle` (the atomic write), priced at
the Batch API's half price. Items are settled a group a transaction, each by an UPDATE guarded
on its being still held by this provider batch (`settle_items`), so a poller killed half-way, or
two at once, never settle an item twice: the next poll downloads the files again and settles
what is still held (a file written again is the same file). A bad line (an unknown custom_id, a line cut
short) is that item's failed attempt, never the batch's; an item the provider never tried (its
batch expired, failed or was cancelled) is sent again without counting an attempt.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field

from actors.batches.economy import (
    Settled,
    asks_of,
    cancel_provider_batches,
    failed_attempt,
    held_items,
    item_of,
    send,
    settle_items,
    submit,
)
from actors.batches.finish import finish_if_done
from actors.batches.kinds import ItemRun, kind_of
from actors.runtime import fleet_actor, task
from core.errors import CODES, Classified, JobError, classify
from core.locks import RedisLock
from core.settings import get_settings
from core.state import state_redis
from db.models import utcnow
from db.models.batches import Batch, BatchItem, ProviderBatch

log = logging.getLogger("fleet.batches.economy")

POLL_LOCK_TTL = 300
SETTLE_GROUP = 50  # items settled in one transaction (each guarded on its own: none is settled twice)
CUSTOM_ID = re.compile(r'"custom_id"\s*:\s*"([^"]+)"')
UNTRIED = {"batch_expired", "batch_cancelled"}  # the provider never ran these requests


@dataclass
class Lines:
    """A provider batch's result files, by item: each ask's line (or its problem)."""

    by_item: dict[int, dict[int, dict | Classified]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # lines that name no item of ours

    def add(self, text: str, source: str) -> None:
        for n, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
                custom = line["custom_id"]
            except (ValueError, KeyError, TypeError):
                found = CUSTOM_ID.search(raw)
                where = item_of(found.group(1)) if found else None
                if where is None:
                    self.problems.append(f"{source} line {n}: not valid JSON, no custom_id to be read")
                    continue
                self._put(where, Classified(CODES["ERR_INVALID_RESPONSE"], f"its result line ({source} line {n}) is "
                                                                           "not valid JSON (cut short?)"))
                continue
            where = item_of(str(custom))
            if where is None:
                self.problems.append(f"{source} line {n}: unknown custom_id {str(custom)[:80]!r}")
                continue
            self._put(where, line)

    def _put(self, where: tuple[int, int], value) -> None:
        item_id, ask = where
        self.by_item.setdefault(item_id, {})[ask] = value


def _line_error(line: dict) -> Classified | None:
    """The failure a result line reports (an error line, or a response that is not a 200)."""
    if line.get("error"):
        error = line["error"]
        code = str(error.get("code") or "")
        name = "ERR_API_UNAVAILABLE" if code in UNTRIED or code == "server_error" else (
            "ERR_RATE_LIMIT" if "rate" in code else "ERR_BAD_REQUEST" if code.startswith("invalid") else "ERR_API_UNAVAILABLE")
        return Classified(CODES[name], f"the provider failed the request: {code or 'error'}: {str(error.get('message'))[:300]}")
    response = line.get("response") or {}
    status = response.get("status_code")
    if status != 200:
        body = response.get("body") or {}
        message = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
        name = ("ERR_RATE_LIMIT" if status == 429 else "ERR_API_UNAVAILABLE" if not status or status >= 500
                else "ERR_AUTH" if status in (401, 403) else "ERR_BAD_REQUEST")
        return Classified(CODES[name], f"the provider answered HTTP {status}: {str(message)[:300]}")
    return None


def _untried(line) -> bool:
    return isinstance(line, dict) and str((line.get("error") or {}).get("code")) in UNTRIED


def outcome_of(batch: Batch, item: BatchItem, answers: dict[int, dict | Classified], row: ProviderBatch) -> Settled:
    """What one item's result lines come to: its result settled through the live lane's checks and
    the kind's `settle`, a failed attempt, or handed back untried."""
    from core.clients.openai_client import completion_of, cost_usd, usable_answer

    try:
        asks = asks_of(batch, item)
    except Exception as exc:
        return Settled("failed", error=classify(exc))
    missing = [n for n in range(len(asks)) if n not in answers]
    if row.provider_status == "failed" and not answers:  # the provider refused the whole file: an attempt
        return failed_attempt(item, batch, Classified(CODES["ERR_API_UNAVAILABLE"],
                                                      f"the provider batch failed: {row.error or 'no reason given'}"))
    if (missing and row.provider_status != "completed") or any(_untried(a) for a in answers.values()):
        return Settled("cancelled" if batch.status == "cancelled" else "pending", counts_attempt=False)
    paid = {"cost_usd": 0.0, "prompt_tokens": 0, "completion_tokens": 0}
    data: list[dict] = []
    try:
        if missing:
            raise JobError("ERR_INVALID_RESPONSE", f"no result line for {len(missing)} of its {len(asks)} request(s)")
        for n, ask in enumerate(asks):
            line = answers[n]
            if isinstance(line, Classified):
                raise JobError(line.code.code, line.message)
            error = _line_error(line)
            if error is not None:
                raise JobError(error.code.code, error.message)
            completion = completion_of(line["response"]["body"])
            usage = completion.usage
            if usage:
                paid["cost_usd"] += cost_usd(completion.model, usage.prompt_tokens, usage.completion_tokens, "economy")
                paid["prompt_tokens"] += usage.prompt_tokens
                paid["completion_tokens"] += usage.completion_tokens
            data.append(usable_answer(completion, ask.schema, ask.schema_name, ask.check))
        run = ItemRun(batch, item, f"economy:{item.provider_batch}", item.position // batch.chunk_size)
        run.charge(paid["cost_usd"], paid["prompt_tokens"] + paid["completion_tokens"])
        result = kind_of(batch).economy.settle(run, data)
    except Exception as exc:
        return failed_attempt(item, batch, classify(exc), **paid)
    return Settled("succeeded", result=result, **paid)


def settle_provider_batch(row: ProviderBatch, client) -> int:
    """Settle every item the ended provider batch `row` still holds; the items settled now."""
    batch = Batch.get_by_id(row.batch_id)
    lines = Lines()
    for file_id, source in ((row.output_file_id, "output"), (row.error_file_id, "error")):
        if file_id:
            lines.add(client.content(file_id), source)
    settled = 0
    job_class = f"economy:{batch.kind}"
    group: list = []
    for item in held_items(row.id):
        item.batch = batch
        group.append((item, outcome_of(batch, item, lines.by_item.get(item.id, {}), row)))
        if len(group) >= SETTLE_GROUP:
            settled += settle_items(group, row.id, job_class)
            group = []
    settled += settle_items(group, row.id, job_class) if group else 0
    if lines.problems:
        log.warning("provider batch result lines not settled", extra={"batch_id": batch.id,
                                                                       "provider_batch": row.provider_id,
                                                                       "problems": lines.problems[:20]})
    ProviderBatch.update(status="settled", settled_at=utcnow(),
                         error="; ".join(lines.problems)[:2000] or row.error).where(
        (ProviderBatch.id == row.id) & (ProviderBatch.status == "ended")).execute()
    return settled


@dataclass
class PollReport:
    looked_at: int = 0
    settled_items: int = 0
    submitted: int = 0
    finished: list[str] = field(default_factory=list)


def poll(client=None) -> PollReport:
    """One pass over every open provider batch: send those a sender left `preparing`, look at
    those submitted, settle those ended; then send what is pending and finish what is done."""
    from core.clients.openai_batch import OpenAIBatchClient

    report = PollReport()
    rows = list(ProviderBatch.select().where(ProviderBatch.status.in_(ProviderBatch.OPEN)).order_by(ProviderBatch.id))
    pending = {b for b, in BatchItem.select(BatchItem.batch).join(Batch, on=(BatchItem.batch == Batch.id)).where(
        (Batch.lane == "economy") & (BatchItem.status == "pending") & Batch.finished_at.is_null()).distinct().tuples()}
    if not rows and not pending:
        return report
    client = client or OpenAIBatchClient(get_settings())
    touched: set[str] = set(pending)
    for row in rows:
        report.looked_at += 1
        touched.add(row.batch_id)
        try:
            if row.status == "preparing":
                send(row, client)
                continue
            if row.status == "submitted":
                row = _look(row, client)
            if row.status == "ended":
                report.settled_items += settle_provider_batch(row, client)
        except Exception as exc:  # one provider batch's trouble never stops the others
            log.warning("provider batch not polled", extra={"batch_id": row.batch_id, "provider_batch": row.provider_id,
                                                            "reason": str(exc)[:300]})
    for batch_id in sorted(touched):
        try:
            report.submitted += submit(batch_id, client)
        except Exception as exc:  # the row stays `preparing`: the next poll sends it
            log.warning("economy batch not sent", extra={"batch_id": batch_id, "reason": str(exc)[:300]})
        if finish_if_done(batch_id):
            report.finished.append(batch_id)
    return report


def _look(row: ProviderBatch, client) -> ProviderBatch:
    from actors.batches.economy import _counts

    found = client.retrieve(row.provider_id)
    fields = {"provider_status": found.status, "request_counts": _counts(found),
              "output_file_id": found.output_file_id, "error_file_id": found.error_file_id}
    if found.status in ProviderBatch.PROVIDER_FINAL:
        errors = getattr(found, "errors", None)
        detail = "; ".join(f"{e.code}: {e.message}" for e in (errors.data or [])) if errors and errors.data else None
        fields.update(status="ended", ended_at=utcnow(), error=detail)
    ProviderBatch.update(**fields).where((ProviderBatch.id == row.id) & (ProviderBatch.status == "submitted")).execute()
    return ProviderBatch.get_by_id(row.id)


@task("batches.economy-poll")
@fleet_actor(queue_name="maintenance", retry_delays=())
def poll_provider_batches() -> None:
    """Poll OpenAI's Batch API for every economy batch (one pass for all of them, one at a time)."""
    lock = RedisLock(state_redis(), "fleet:economy:poll", f"poll-{utcnow().timestamp()}", POLL_LOCK_TTL)
    if not lock.acquire():
        log.info("another economy poll is running")
        return
    try:
        report = poll()
    finally:
        lock.release()
    if report.looked_at or report.submitted:
        log.info("economy poll", extra={"provider_batches": report.looked_at, "items_settled": report.settled_items,
                                        "submitted": report.submitted, "batches_finished": len(report.finished)})


__all__ = ["Lines", "PollReport", "cancel_provider_batches", "poll", "poll_provider_batches", "settle_provider_batch"]
