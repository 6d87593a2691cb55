from peewee import CharField, DateTimeField, FloatField, ForeignKeyField, IntegerField, Model, TextField


def up(db, migrator):
    class Batch(Model):
        id = CharField(primary_key=True, max_length=36)
        kind = CharField()
        title = TextField()
        status = CharField()
        total = IntegerField()
        chunk_size = IntegerField()
        processed = IntegerField(default=0)
        succeeded = IntegerField(default=0)
        failed = IntegerField(default=0)
        cancelled = IntegerField(default=0)
        cost_usd = FloatField(default=0)
        tokens = IntegerField(default=0)
        current_item = TextField(null=True)
        options = TextField(null=True)
        created_by = CharField(null=True)
        created_at = DateTimeField()
        started_at = DateTimeField(null=True)
        finished_at = DateTimeField(null=True)

        class Meta:
            database = db
            table_name = "batch"
            indexes = ((("created_at",), False), (("status", "created_at"), False))

    class BatchChunk(Model):
        batch = ForeignKeyField(Batch, on_delete="CASCADE", index=False)
        number = IntegerField()
        processed = IntegerField(default=0)
        succeeded = IntegerField(default=0)
        failed = IntegerField(default=0)
        cost_usd = FloatField(default=0)
        tokens = IntegerField(default=0)
        current_item = TextField(null=True)
        touched_at = DateTimeField(null=True)

        class Meta:
            database = db
            table_name = "batch_chunk"
            indexes = ((("batch", "number"), True),)

    class BatchItem(Model):
        batch = ForeignKeyField(Batch, on_delete="CASCADE", index=False)
        position = IntegerField()
        key = TextField()
        status = CharField()
        owner = CharField(null=True)
        attempts = IntegerField(default=0)
        result = TextField(null=True)
        error_code = CharField(null=True)
        error_message = TextField(null=True)
        cost_usd = FloatField(default=0)
        tokens = IntegerField(default=0)
        started_at = DateTimeField(null=True)
        finished_at = DateTimeField(null=True)

        class Meta:
            database = db
            table_name = "batch_item"
            indexes = (
                (("batch", "position"), True),  # a chunk's items, in order
                (("batch", "status", "error_code"), False),  # open items, counts, errors by code
            )

    db.create_tables([Batch, BatchChunk, BatchItem])
