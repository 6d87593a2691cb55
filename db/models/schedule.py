"""The schedule's ledger (a row a slot, unique on entry and slot time) and its paused entries."""
from __future__ import annotations

from peewee import BooleanField, CharField, DateTimeField, FloatField, TextField

from db.models import BaseModel, utcnow


class ScheduleRun(BaseModel):
    """One slot of one schedule entry: claimed by inserting this row, then emitted, skipped or missed.

    `kind` is `slot` (the trigger's), `catch-up` (a missed slot emitted late) or `manual` (run now).
    """

    FINAL = ("succeeded", "failed", "skipped", "missed")

    name = CharField()
    slot_time = DateTimeField()  # UTC
    kind = CharField(default="slot")
    task = CharField()
    state = CharField()
    detail = TextField(null=True)  # why skipped or missed, who ran it now, the last error
    error_code = CharField(null=True)
    scheduler = CharField(null=True)  # who claimed it: a scheduler id, or the operator of a manual run
    message_id = CharField(null=True)
    emitted_at = DateTimeField(null=True)
    started_at = DateTimeField(null=True)
    finished_at = DateTimeField(null=True)
    duration_seconds = FloatField(null=True)
    created_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "schedule_runs"


class SchedulePause(BaseModel):
    """An entry an operator paused: every scheduler skips its slots while the row says so."""

    name = CharField(primary_key=True)
    paused = BooleanField(default=True)
    changed_by = CharField(null=True)
    changed_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "schedule_pauses"
