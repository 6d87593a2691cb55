from peewee import CharField, DateTimeField, IntegerField, Model, TextField


def up(db, migrator):
    class OutboxMessage(Model):
        message_id = CharField(primary_key=True)
        actor_name = CharField()
        queue_name = CharField()
        args = TextField()
        kwargs = TextField()
        options = TextField()
        send_after = DateTimeField(null=True)
        created_at = DateTimeField()
        sent_at = DateTimeField(null=True)
        attempts = IntegerField()
        last_error = TextField(null=True)

        class Meta:
            database = db
            table_name = "fleet_outbox"
            indexes = ((("sent_at", "created_at"), False),)

    db.create_tables([OutboxMessage])
