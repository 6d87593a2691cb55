"""Batches: a unit of background work split into items, worked in chunks, with a ledger.

The item rows are the truth. A batch's running counters live in its chunk rows, one a
chunk job, so no two workers ever update the same counter row; the `Batch` row holds the
totals recounted from the items when the batch ends.
"""
from __future__ import annotations

from peewee import CharField, DateTimeField, FloatField, ForeignKeyField, IntegerField, TextField

from db.models import BaseModel, JSONField, utcnow


class Batch(BaseModel):
    STATUSES = ("queued", "processing", "completed", "cancelled", "failed")
    FINISHED = ("completed", "cancelled", "failed")

    id = CharField(primary_key=True, max_length=36)  # a uuid4
    kind = CharField()
    title = TextField()
    status = CharField(default="queued")
    lane = CharField(default="live")  # live: a call an item; economy: OpenAI's Batch API (ProviderBatch)
    total = IntegerField(default=0)
    chunk_size = IntegerField()
    # totals recounted from the items when the batch ends; while it runs, its chunks hold them
    processed = IntegerField(default=0)
    succeeded = IntegerField(default=0)
    failed = IntegerField(default=0)
    cancelled = IntegerField(default=0)
    cost_usd = FloatField(default=0)
    tokens = IntegerField(default=0)
    current_item = TextField(null=True)
    options = JSONField(null=True)
    created_by = CharField(null=True)
    created_at = DateTimeField(default=utcnow)
    started_at = DateTimeField(null=True)
    finished_at = DateTimeField(null=True)

    class Meta:
        table_name = "batch"


class BatchChunk(BaseModel):
    """The counters of one chunk, written by the one job that works it (and by cancel/retry)."""

    batch = ForeignKeyField(Batch, backref="chunks", on_delete="CASCADE", index=False)
    number = IntegerField()
    processed = IntegerField(default=0)
    succeeded = IntegerField(default=0)
    failed = IntegerField(default=0)
    cost_usd = FloatField(default=0)
    tokens = IntegerField(default=0)
    current_item = TextField(null=True)
    touched_at = DateTimeField(null=True)

    class Meta:
        table_name = "batch_chunk"


class BatchItem(BaseModel):
    STATUSES = ("pending", "running", "succeeded", "failed", "cancelled")
    OPEN = ("pending", "running")

    batch = ForeignKeyField(Batch, backref="items", on_delete="CASCADE", index=False)
    position = IntegerField()  # chunk n holds positions [n * chunk_size, (n + 1) * chunk_size)
    key = TextField()
    status = CharField(default="pending")
    owner = CharField(null=True)  # message id of the chunk job working it (while running)
    provider_batch = IntegerField(null=True)  # economy lane: the ProviderBatch holding it (while running)
    attempts = IntegerField(default=0)
    result = JSONField(null=True)
    error_code = CharField(null=True)
    error_message = TextField(null=True)
    cost_usd = FloatField(default=0)
    tokens = IntegerField(default=0)
    started_at = DateTimeField(null=True)
    finished_at = DateTimeField(null=True)

    class Meta:
        table_name = "batch_item"


class ProviderBatch(BaseModel):
    """One batch of requests sent to OpenAI's Batch API for an economy-lane batch: the ledger of
    which provider batch holds which items (`BatchItem.provider_batch`).

    `status`: `preparing` (items assigned, nothing sent yet), `submitted` (the provider has it),
    `ended` (the provider finished it: completed, expired, failed or cancelled; its files not yet
    settled), `settled` (every item it held was settled or handed back)."""

    OPEN = ("preparing", "submitted", "ended")
    PROVIDER_FINAL = ("completed", "expired", "failed", "cancelled")

    batch = ForeignKeyField(Batch, backref="provider_batches", on_delete="CASCADE", index=False)
    status = CharField(default="preparing")
    provider_id = CharField(null=True)
    provider_status = CharField(null=True)  # validating | in_progress | finalizing | completed | expired | …
    input_file_id = CharField(null=True)
    output_file_id = CharField(null=True)
    error_file_id = CharField(null=True)
    items = IntegerField()
    requests = IntegerField()
    bytes = IntegerField()
    request_counts = JSONField(null=True)  # the provider's {total, completed, failed}
    error = TextField(null=True)
    created_at = DateTimeField(default=utcnow)
    submitted_at = DateTimeField(null=True)
    ended_at = DateTimeField(null=True)
    settled_at = DateTimeField(null=True)

    class Meta:
        table_name = "provider_batch"
