"""The job log: a row per attempt of any job."""
from __future__ import annotations

from peewee import (
    BigIntegerField,
    CharField,
    CompositeKey,
    DateTimeField,
    DoubleField,
    FloatField,
    IntegerField,
    TextField,
)

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


class _HourCounts(BaseModel):
    hour = DateTimeField()
    job_class = CharField()
    status = CharField()
    error_code = CharField(default="")  # '' for none
    attempts = BigIntegerField()
    timed = BigIntegerField()  # attempts with a duration
    seconds = DoubleField()  # the sum of their durations


class JobLogHour(_HourCounts):
    """JobLog rows counted by hour (of `created_at`), job class, status and error code; kept by
    triggers on job_log (migration 0015), read through db.job_log_hours."""

    class Meta:
        table_name = "job_log_hours"
        primary_key = CompositeKey("hour", "job_class", "status", "error_code")


class JobLogHourDelta(_HourCounts):
    """PostgreSQL only: changes to JobLogHour not yet folded into it (db.job_log_hours.fold)."""

    class Meta:
        table_name = "job_log_hour_deltas"
        primary_key = False


class PausedQueue(BaseModel):
    """A queue the workers do not fetch from; mirrored to Redis, where the workers read it."""

    queue = CharField(primary_key=True)
    paused_by = CharField()
    paused_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "paused_queues"
