from peewee import BooleanField, CharField, DateTimeField, FloatField, Model, TextField


def up(db, migrator):
    class ScheduleRun(Model):
        name = CharField()
        slot_time = DateTimeField()
        kind = CharField()
        task = CharField()
        state = CharField()
        detail = TextField(null=True)
        error_code = CharField(null=True)
        scheduler = CharField(null=True)
        message_id = CharField(null=True)
        emitted_at = DateTimeField(null=True)
        started_at = DateTimeField(null=True)
        finished_at = DateTimeField(null=True)
        duration_seconds = FloatField(null=True)
        created_at = DateTimeField()

        class Meta:
            database = db
            table_name = "schedule_runs"
            # The claim: only the process whose INSERT created the row emits the slot.
            # The same index serves an entry's history and its last slot.
            indexes = ((("name", "slot_time"), True),)

    class SchedulePause(Model):
        name = CharField(primary_key=True)
        paused = BooleanField()
        changed_by = CharField(null=True)
        changed_at = DateTimeField()

        class Meta:
            database = db
            table_name = "schedule_pauses"

    db.create_tables([ScheduleRun, SchedulePause])
