import click
from peewee import OperationalError

from actors.runtime import boot
from core.broker import check_broker
from core.errors import FleetError
from core.settings import get_settings
from core.urls import redact_url
from db import migrate as migrations
from db.database import allow_creation, database


def open_database(*, require_schema: bool = True, broker: bool = False):
    """Boot and connect, or fail with one line naming the database or the pending migrations;
    with `broker`, check that the broker answers too."""
    settings = boot()
    try:
        database.connect(reuse_if_open=True)
    except OperationalError as exc:
        raise FleetError(f"database unreachable at {redact_url(settings.database_url)}: {' '.join(str(exc).split())}") from None
    if require_schema:
        pending = [s.name for s in migrations.status(database.obj) if s.applied_at is None]
        if pending:
            raise FleetError(f"{len(pending)} migration(s) pending ({', '.join(pending)}): run `fleet db migrate`")
    if broker:
        check_broker(settings)
    return database.obj


def where_var() -> str:
    settings = get_settings()
    return f"{settings.var_dir} ({settings.var_dir_found_by})"


@click.group("db")
def db_group() -> None:
    """Database schema: versioned migrations."""


@db_group.command("migrate")
def migrate_command() -> None:
    """Apply every pending migration (creating a SQLite database that does not exist yet)."""
    allow_creation(True)
    db = open_database(require_schema=False)
    click.echo(f"database: {redact_url(get_settings().database_url)}; var/: {where_var()}")
    applied = migrations.migrate(db)
    for name in applied:
        click.echo(f"applied {name}")
    click.echo(f"{len(applied)} migration(s) applied; schema is up to date.")


@db_group.command("status")
def status_command() -> None:
    """List migrations and when each was applied."""
    rows = migrations.status(open_database(require_schema=False))
    click.echo(f"database: {redact_url(get_settings().database_url)}; var/: {where_var()}")
    for row in rows:
        when = row.applied_at.isoformat(sep=" ", timespec="seconds") if row.applied_at else "pending"
        click.echo(f"{row.name:<40} {when}")


commands = [db_group]
