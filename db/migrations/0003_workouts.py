from peewee import CharField, DateTimeField, FloatField, ForeignKeyField, IntegerField, Model, TextField


def up(db, migrator):
    class User(Model):
        email = CharField(unique=True)
        name = CharField(null=True)
        created_at = DateTimeField()

        class Meta:
            database = db
            table_name = "app_user"

    class Plan(Model):
        user = ForeignKeyField(User, on_delete="CASCADE")
        goal = TextField()
        days = IntegerField()
        created_at = DateTimeField()

        class Meta:
            database = db
            table_name = "plan"

    class WorkoutPlan(Model):
        plan = ForeignKeyField(Plan, on_delete="CASCADE", index=False)
        day = IntegerField()
        status = CharField()
        content = TextField(null=True)
        error_code = CharField(null=True)
        error_message = TextField(null=True)
        attempts = IntegerField(default=0)
        cost_usd = FloatField(default=0)
        created_at = DateTimeField()
        updated_at = DateTimeField()

        class Meta:
            database = db
            table_name = "workout_plan"
            indexes = (
                (("plan", "day"), True),
                (("status", "plan"), False),
                (("status", "updated_at"), False),
                (("error_code", "status"), False),
            )

    db.create_tables([User, Plan, WorkoutPlan])
