from peewee import CharField, DateTimeField, Model


def up(db, migrator):
    class PausedQueue(Model):
        queue = CharField(primary_key=True)
        paused_by = CharField()
        paused_at = DateTimeField()

        class Meta:
            database = db
            table_name = "paused_queues"

    # A job's arguments by name, a row each, written with the JobLog row of its first attempt:
    # the job-log search finds `plan_id=13` through the (name, value) index on any database.
    class JobArgument(Model):
        message_id = CharField()
        name = CharField()
        value = CharField()
        created_at = DateTimeField(index=True)  # the cleanup's

        class Meta:
            database = db
            table_name = "job_arguments"
            indexes = ((("name", "value"), False),)

    db.create_tables([PausedQueue, JobArgument])
