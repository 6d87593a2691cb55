from peewee import BigIntegerField, CharField, DateTimeField, ForeignKeyField, IntegerField, Model, TextField


def up(db, migrator):
    def synced(name: str, **extra):
        """A table of records kept in sync with the series API, with the indexes its sweeps need."""
        fields = dict(
            tvdb_id=BigIntegerField(unique=True),
            name=CharField(null=True),
            data=TextField(null=True),
            data_last_updated_at=DateTimeField(null=True),
            error_code=CharField(null=True),
            error_message=TextField(null=True),
            failed_at=DateTimeField(null=True),
            created_at=DateTimeField(),
            **extra,
        )
        meta = type("Meta", (), {"database": db, "table_name": name})
        model = type(name.title(), (Model,), {**fields, "Meta": meta})
        # import-missing: rows never imported, in id order (keyset), the error code to skip failed
        # ones read from the index; only the rows without data are in it
        model.add_index(model.index(model.id, model.error_code, name=f"{name}_without_data",
                                    where=model.data_last_updated_at.is_null()))
        # check-updates: rows older than a cutoff, in (age, id) order (keyset)
        model.add_index(model.index(model.data_last_updated_at, model.id, name=f"{name}_data_age"))
        # failed by code (counts and the panel's filter); most rows have no error
        model.add_index(model.index(model.error_code, model.id, name=f"{name}_failed",
                                    where=model.error_code.is_null(False)))
        return model

    Series = synced("series")
    Episode = synced("episode", series=ForeignKeyField(Series, on_delete="CASCADE"),
                     season=IntegerField(null=True), number=IntegerField(null=True), aired=CharField(null=True))
    db.create_tables([Series, Episode])
