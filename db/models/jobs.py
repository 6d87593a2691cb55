"""The job log: a row per attempt of any job."""
from __future__ import annotations

from peewee import CharField, DateTimeField, FloatField, IntegerField, TextField

from db.models import BaseModel, utcnow


class JobLog(BaseModel):
    """A row per attempt of a job: what ran, how it ended, how long it took."""

    STATUSES = ("started", "success", "failed", "retrying", "deferred", "abandoned", "cancelled")

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
    redelivered_as = CharField(null=True)  # an abandoned attempt: the run id of the one that took its message over

    class Meta:
        table_name = "job_log"


class JobArgument(BaseModel):
    """A job's scalar argument by name (`plan_id` = `13`), a row each, kept with the JobLog row of
    its first attempt so the job log can be searched by what a job worked on."""

    message_id = CharField()
    name = CharField()
    value = CharField()
    created_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "job_arguments"


class PausedQueue(BaseModel):
    """A queue the workers do not fetch from; mirrored to Redis, where the workers read it."""

    queue = CharField(primary_key=True)
    paused_by = CharField()
    paused_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "paused_queues"
