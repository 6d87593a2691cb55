from peewee import CharField, DateTimeField, Model


def up(db, migrator):
    class PanelAccount(Model):
        email = CharField(unique=True)
        password_hash = CharField()
        role = CharField(default="viewer")
        created_at = DateTimeField()
        last_login_at = DateTimeField(null=True)

        class Meta:
            database = db
            table_name = "panel_account"

    db.create_tables([PanelAccount])
