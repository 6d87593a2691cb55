"""What AI calls cost: a row a day (of FLEET_TIMEZONE) and job class, added to after every call."""
from __future__ import annotations

from peewee import CharField, DateField, FloatField, IntegerField

from db.models import BaseModel


class AISpend(BaseModel):
    day = DateField()
    job_class = CharField()
    usd = FloatField(default=0)
    requests = IntegerField(default=0)
    prompt_tokens = IntegerField(default=0)
    completion_tokens = IntegerField(default=0)

    class Meta:
        table_name = "ai_spend"
        indexes = ((("day", "job_class"), True),)
