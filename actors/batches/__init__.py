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

Modules: `kinds` (the registry), `chunks` (the chunk job), `finish`, `operations`
(create, cancel, resume, retry, prune), `views` (what the CLI, the API and the panel show),
`economy` and `economy_results` (the economy lane: items sent to OpenAI's Batch API, and the
scheduled poll that settles their results).
"""
from actors.batches.chunks import batch_kind, fail_open_items, work_chunk
from actors.batches.economy import check_lane, submit, submit_economy_batch
from actors.batches.economy_results import PollReport, poll, poll_provider_batches
from actors.batches.finish import finish_if_done, recount
from actors.batches.kinds import FINISH_HOOKS, KINDS, Ask, Economy, ItemRun, Kind, kind_of, on_finish
from actors.batches.operations import (
                                       PRUNE_DAYS,
                                       PRUNE_KEEP,
                                       Resumed,
                                       cancel,
                                       cancelled_text,
                                       create_batch,
                                       prune,
                                       resume,
                                       resume_stale_batches,
                                       retried_text,
                                       retry,
)
from actors.batches.views import (
                                       SHORT_ID,
                                       Snapshot,
                                       economy_text,
                                       errors,
                                       find_batch,
                                       item_dict,
                                       items,
                                       lane_label,
                                       list_batches,
                                       live_totals,
                                       outcome_text,
                                       provider_batches,
                                       saved_usd,
                                       snapshot,
                                       status_label,
                                       usd,
)

__all__ = [
    "Ask", "Economy", "economy_text", "lane_label", "provider_batches", "saved_usd", "PollReport", "check_lane", "poll", "poll_provider_batches", "submit", "submit_economy_batch",
    "FINISH_HOOKS", "ItemRun", "KINDS", "Kind", "PRUNE_DAYS", "PRUNE_KEEP", "Resumed", "SHORT_ID", "Snapshot",
    "batch_kind", "cancel", "cancelled_text", "create_batch", "errors", "fail_open_items", "find_batch",
    "finish_if_done", "item_dict", "items", "kind_of", "list_batches", "live_totals", "on_finish", "outcome_text",
    "prune", "recount", "resume", "resume_stale_batches", "retried_text", "retry", "snapshot", "status_label", "usd",
    "work_chunk",
]
