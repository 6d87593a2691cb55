"""Workout plans: the app's users, their plans and a row a plan day."""
from __future__ import annotations

from peewee import CharField, DateTimeField, FloatField, ForeignKeyField, IntegerField, TextField

from db.models import BaseModel, JSONField, utcnow


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
