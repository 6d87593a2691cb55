from peewee import CharField, DateTimeField, ForeignKeyField, IntegerField, Model, TextField


def up(db, migrator):
    # lane: how a batch's AI calls are made, `live` (a call an item) or `economy` (OpenAI's Batch
    # API). provider_batch: the provider batch (a `provider_batch` row) holding an economy item now.
    migrator.add_column("batch", "lane", CharField(default="live")).run()
    migrator.add_column("batch_item", "provider_batch", IntegerField(null=True)).run()

    class Batch(Model):
        id = CharField(primary_key=True, max_length=36)

        class Meta:
            database = db
            table_name = "batch"

    class ProviderBatch(Model):
        batch = ForeignKeyField(Batch, on_delete="CASCADE", index=False)
        status = CharField()
        provider_id = CharField(null=True)
        provider_status = CharField(null=True)
        input_file_id = CharField(null=True)
        output_file_id = CharField(null=True)
        error_file_id = CharField(null=True)
        items = IntegerField()
        requests = IntegerField()
        bytes = IntegerField()
        request_counts = TextField(null=True)
        error = TextField(null=True)
        created_at = DateTimeField()
        submitted_at = DateTimeField(null=True)
        ended_at = DateTimeField(null=True)
        settled_at = DateTimeField(null=True)

        class Meta:
            database = db
            table_name = "provider_batch"
            indexes = ((("batch", "status"), False), (("status",), False))

    db.create_tables([ProviderBatch])
