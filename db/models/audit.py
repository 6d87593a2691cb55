"""The audit log: who changed what, from the panel, the CLI or the API."""
from __future__ import annotations

from peewee import CharField, DateTimeField, IntegerField, TextField

from db.models import BaseModel, utcnow


class AuditEvent(BaseModel):
    """One state-changing action of an operator (or a token, or an OS user at the CLI)."""

    SOURCES = ("panel", "cli", "api")

    created_at = DateTimeField(default=utcnow, index=True)
    who = CharField(index=True)  # an account's email, `token:NAME`, or the OS user
    role = CharField()  # admin | viewer | cli | operate | read
    action = CharField(index=True)  # dotted: "jobs.retry", "accounts.disable" …
    target = TextField(default="")  # what it acted on: an id, a name, or the filter
    rows = IntegerField(null=True)  # how many rows or messages it touched, when that is known
    source = CharField()
    address = CharField(default="")  # the client's address (proxy-aware) for panel and API
    trace_id = CharField(default="")

    class Meta:
        table_name = "audit_log"
