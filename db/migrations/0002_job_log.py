from peewee import CharField, DateTimeField, FloatField, IntegerField, Model, TextField


def up(db, migrator):
    class JobLog(Model):
        run_id = CharField()  # found through the message_id index; one more random index costs every insert
        job_class = CharField()
        message_id = CharField(index=True)
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
        created_at = DateTimeField()
        finished_at = DateTimeField(null=True)

        class Meta:
            database = db
            table_name = "job_log"
            indexes = (
                (("created_at",), False),
                (("job_class", "status", "created_at"), False),
                (("status", "created_at"), False),
                (("trace_id",), False),
            )

    # Most rows have no error code: only the others are indexed.
    JobLog.add_index(JobLog.error_code, JobLog.created_at, where=JobLog.error_code.is_null(False))
    db.create_tables([JobLog])
