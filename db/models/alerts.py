"""Alerts: where each rule stands (a row a rule and subject), what was sent, and silences."""
from __future__ import annotations

from peewee import CharField, DateTimeField, FloatField, IntegerField, TextField

from db.models import BaseModel, JSONField, utcnow


class AlertState(BaseModel):
    """One rule for one subject (a service, a queue, an actor …): `firing` since when, the
    last notification, and when it resolved. Unique on (rule, subject)."""

    rule = CharField()
    subject = CharField()  # "" for a rule about the whole fleet
    kind = CharField()
    severity = CharField()
    state = CharField()  # firing | resolved
    summary = TextField()
    labels = JSONField(default=dict)
    since = DateTimeField()  # UTC: firing since (or last fired, once resolved)
    last_notified_at = DateTimeField(null=True)  # None while silenced
    notifications = IntegerField(default=0)
    resolved_at = DateTimeField(null=True)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "alert_states"


class AlertEvent(BaseModel):
    """The history: each notification (firing, again, resolved) and each silenced start."""

    rule = CharField()
    subject = CharField()
    kind = CharField()
    severity = CharField()
    state = CharField()  # firing | resolved | test
    summary = TextField()
    labels = JSONField(default=dict)
    since = DateTimeField()
    duration_seconds = FloatField(null=True)  # of a resolved alert
    silenced = CharField(null=True)  # who silenced it, when no one was told
    created_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "alert_events"


class AlertDelivery(BaseModel):
    """One notification to one channel: how it went, what the channel answered."""

    event_id = IntegerField(null=True)
    channel = CharField()  # webhook | email
    status = CharField()  # sending | sent | retrying | failed
    attempts = IntegerField(default=0)
    answer = TextField(null=True)  # the channel's answer, redacted
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "alert_deliveries"


class AlertSilence(BaseModel):
    """An operator's silence of a rule until a time: it still fires and is recorded, no one is told."""

    rule = CharField()
    until = DateTimeField()  # UTC
    reason = TextField(null=True)
    created_by = CharField()
    created_at = DateTimeField(default=utcnow)
    lifted_by = CharField(null=True)
    lifted_at = DateTimeField(null=True)

    class Meta:
        table_name = "alert_silences"
