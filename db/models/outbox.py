"""The outbox: a job promised by a committed row, written in that row's transaction."""
from __future__ import annotations

from peewee import CharField, DateTimeField, IntegerField, TextField

from db.models import BaseModel, JSONField, utcnow


class OutboxMessage(BaseModel):
    """A Dramatiq message to send once its transaction has committed. `message_id` is the
    message's own id, the same on every send; `sent_at` is set once Redis has it."""

    message_id = CharField(primary_key=True)
    actor_name = CharField()
    queue_name = CharField()
    args = JSONField()
    kwargs = JSONField()
    options = JSONField()
    send_after = DateTimeField(null=True)  # a delayed job: not before this (UTC)
    created_at = DateTimeField(default=utcnow)
    sent_at = DateTimeField(null=True)
    attempts = IntegerField(default=0)  # sends that failed
    last_error = TextField(null=True)

    class Meta:
        table_name = "fleet_outbox"
        indexes = ((("sent_at", "created_at"), False),)
