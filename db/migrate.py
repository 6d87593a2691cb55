"""Versioned migrations: each module in db/migrations has `up(db, migrator)`.

Applied names are recorded in `fleet_migration`; `migrate()` applies the rest in
order, each in its own transaction.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from datetime import datetime

from peewee import CharField, Database, DateTimeField, Model
from playhouse.migrate import SchemaMigrator

import db.migrations
from db.models import utcnow


class AppliedMigration(Model):
    name = CharField(primary_key=True)
    applied_at = DateTimeField(default=utcnow)

    class Meta:
        table_name = "fleet_migration"


@dataclass
class MigrationStatus:
    name: str
    applied_at: datetime | None


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(db.migrations.__path__) if m.name[:4].isdigit())


def status(database: Database) -> list[MigrationStatus]:
    with AppliedMigration.bind_ctx(database):
        database.create_tables([AppliedMigration], safe=True)
        applied = {m.name: m.applied_at for m in AppliedMigration.select()}
    return [MigrationStatus(name, applied.get(name)) for name in available()]


def migrate(database: Database, until: str | None = None) -> list[str]:
    """Apply every pending migration (up to and including `until`); return the names applied."""
    done = []
    pending = [s.name for s in status(database) if s.applied_at is None and (until is None or s.name <= until)]
    migrator = SchemaMigrator.from_database(database)
    with AppliedMigration.bind_ctx(database):
        for name in pending:
            module = importlib.import_module(f"db.migrations.{name}")
            with database.atomic():
                module.up(database, migrator)
                AppliedMigration.create(name=name)
            done.append(name)
    return done
