from peewee import CharField, DateTimeField, IntegerField, Model, TextField


def up(db, migrator):
    class AuditEvent(Model):
        created_at = DateTimeField(index=True)
        who = CharField(index=True)
        role = CharField()
        action = CharField(index=True)
        target = TextField()
        rows = IntegerField(null=True)
        source = CharField()
        address = CharField()
        trace_id = CharField()

        class Meta:
            database = db
            table_name = "audit_log"

    class ApiToken(Model):
        name = CharField(unique=True)
        token_hash = CharField(unique=True)
        prefix = CharField()
        scope = CharField()
        created_by = CharField()
        created_at = DateTimeField()
        expires_at = DateTimeField(null=True)
        last_used_at = DateTimeField(null=True)
        last_used_from = CharField(null=True)
        revoked_at = DateTimeField(null=True)

        class Meta:
            database = db
            table_name = "api_token"

    db.create_tables([AuditEvent, ApiToken])
