from peewee import CharField


def up(db, migrator):
    # The run id of the attempt that took over a message whose attempt was abandoned (its worker was lost).
    migrator.add_column("job_log", "redelivered_as", CharField(null=True)).run()
