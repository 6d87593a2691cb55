"""The tables Fleet keeps. Migrations under db/migrations create them; never by hand."""
from __future__ import annotations

from datetime import datetime, timezone

import json

from peewee import CharField, DateTimeField, FloatField, ForeignKeyField, IntegerField, Model, TextField
from werkzeug.security import check_password_hash, generate_password_hash

from db.database import database


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class JSONField(TextField):
    """JSON stored as text: the same on SQLite and PostgreSQL."""

    def db_value(self, value):
        return None if value is None else json.dumps(value, sort_keys=True)

    def python_value(self, value):
        return None if value is None else json.loads(value)


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

    run_id = CharField()
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


class User(BaseModel):
    """A user of the app, who owns workout plans (not a panel account)."""

    email = CharField(unique=True)
    name = CharField(null=True)
    created_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "app_user"


class Plan(BaseModel):
    user = ForeignKeyField(User, backref="plans", on_delete="CASCADE")
    goal = TextField()
    days = IntegerField()
    created_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "plan"


class WorkoutPlan(BaseModel):
    """One day of a plan: `pending` until generated, `failed` with a code when it could not be."""

    STATUSES = ("pending", "generated", "failed")

    plan = ForeignKeyField(Plan, backref="workouts", on_delete="CASCADE")
    day = IntegerField()
    status = CharField(default="pending")
    content = JSONField(null=True)
    error_code = CharField(null=True)
    error_message = TextField(null=True)
    attempts = IntegerField(default=0)
    cost_usd = FloatField(default=0)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "workout_plan"
