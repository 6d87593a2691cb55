from peewee import CharField, DateField, FloatField, IntegerField, Model


def up(db, migrator):
    class AISpend(Model):
        day = DateField()
        job_class = CharField()
        usd = FloatField(default=0)
        requests = IntegerField(default=0)
        prompt_tokens = IntegerField(default=0)
        completion_tokens = IntegerField(default=0)

        class Meta:
            database = db
            table_name = "ai_spend"
            indexes = ((("day", "job_class"), True),)

    db.create_tables([AISpend])
