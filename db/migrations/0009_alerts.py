from peewee import CharField, DateTimeField, FloatField, IntegerField, Model, TextField


def up(db, migrator):
    class AlertState(Model):
        rule = CharField()
        subject = CharField()
        kind = CharField()
        severity = CharField()
        state = CharField()
        summary = TextField()
        labels = TextField()
        since = DateTimeField()
        last_notified_at = DateTimeField(null=True)
        notifications = IntegerField()
        resolved_at = DateTimeField(null=True)
        updated_at = DateTimeField()

        class Meta:
            database = db
            table_name = "alert_states"
            indexes = ((("rule", "subject"), True),)

    class AlertEvent(Model):
        rule = CharField()
        subject = CharField()
        kind = CharField()
        severity = CharField()
        state = CharField()
        summary = TextField()
        labels = TextField()
        since = DateTimeField()
        duration_seconds = FloatField(null=True)
        silenced = CharField(null=True)
        created_at = DateTimeField(index=True)

        class Meta:
            database = db
            table_name = "alert_events"

    class AlertDelivery(Model):
        event_id = IntegerField(null=True, index=True)
        channel = CharField()
        status = CharField()
        attempts = IntegerField()
        answer = TextField(null=True)
        updated_at = DateTimeField()

        class Meta:
            database = db
            table_name = "alert_deliveries"
            indexes = ((("channel", "updated_at"), False),)

    class AlertSilence(Model):
        rule = CharField(index=True)
        until = DateTimeField()
        reason = TextField(null=True)
        created_by = CharField()
        created_at = DateTimeField()
        lifted_by = CharField(null=True)
        lifted_at = DateTimeField(null=True)

        class Meta:
            database = db
            table_name = "alert_silences"

    db.create_tables([AlertState, AlertEvent, AlertDelivery, AlertSilence])
