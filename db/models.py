"""The tables Fleet keeps. Migrations under db/migrations create them; never by hand."""
from __future__ import annotations

from datetime import datetime, timezone

from peewee import CharField, DateTimeField, FloatField, IntegerField, Model, TextField
from werkzeug.security import check_password_hash, generate_password_hash

from db.database import database


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class BaseModel(Model):
    class Meta:
        database = database


class PanelAccount(BaseModel):
    """An operator of the panel (not a user of the app)."""

    ROLES = ("admin", "viewer")

    email = CharField(unique=True)
    password_hash = CharField()
    role = CharField(default="viewer")
    created_at = DateTimeField(default=utcnow)
    last_login_at = DateTimeField(null=True)

    class Meta:
        table_name = "panel_account"

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class JobLog(BaseModel):
    """A row per attempt of a job: what ran, how it ended, how long it took."""

    STATUSES = ("started", "success", "failed", "retrying", "deferred")

    run_id = CharField(unique=True)
    job_class = CharField()
    message_id = CharField()
    queue = CharField()
    status = CharField()
    attempt = IntegerField(default=1)
    error_code = CharField(null=True)
    message = TextField(null=True)
    traceback = TextField(null=True)
    args = TextField(null=True)
    duration_seconds = FloatField(null=True)
    trace_id = CharField(null=True)
    worker = CharField(null=True)
    created_at = DateTimeField(default=utcnow)
    finished_at = DateTimeField(null=True)

    class Meta:
        table_name = "job_log"
