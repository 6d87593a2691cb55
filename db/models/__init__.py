"""The tables Fleet keeps, a module a domain; what they share is here.

Migrations under db/migrations create the tables; never by hand.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone

from peewee import Model, TextField

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
