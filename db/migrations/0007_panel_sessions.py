from peewee import DateTimeField, IntegerField


def up(db, migrator):
    # session_version: part of every panel session; bumping it ends them all (logout,
    # password change, disable). disabled_at: a disabled account cannot log in.
    migrator.add_column("panel_account", "session_version", IntegerField(default=0)).run()
    migrator.add_column("panel_account", "disabled_at", DateTimeField(null=True)).run()
