"""Series and their episodes, kept in sync with the series data API.

`data_last_updated_at` is NULL until a data job stored the API's record; a failed fetch
leaves the last error code, message and time on the row (a later success clears them).
"""
from __future__ import annotations

from peewee import BigIntegerField, CharField, DateTimeField, ForeignKeyField, IntegerField, TextField

from db.models import BaseModel, JSONField, utcnow


class SyncedRecord(BaseModel):
    """What a series and an episode share: the API id, the stored record and its age, the last error."""

    tvdb_id = BigIntegerField(unique=True)
    name = CharField(null=True)
    data = JSONField(null=True)
    data_last_updated_at = DateTimeField(null=True)
    error_code = CharField(null=True)
    error_message = TextField(null=True)
    failed_at = DateTimeField(null=True)
    created_at = DateTimeField(default=utcnow)


class Series(SyncedRecord):
    class Meta:
        table_name = "series"


class Episode(SyncedRecord):
    series = ForeignKeyField(Series, backref="episodes", on_delete="CASCADE")
    season = IntegerField(null=True)
    number = IntegerField(null=True)
    aired = CharField(null=True)  # as the API gives it, YYYY-MM-DD

    class Meta:
        table_name = "episode"
