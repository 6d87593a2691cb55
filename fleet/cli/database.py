import os
from urllib.parse import urlparse

import click
from peewee import OperationalError
from rich.table import Table

from actors.runtime import boot
from core.broker import check_broker
from core.errors import FleetError
from core.settings import get_settings
from core.urls import redact_url
from db import budget
from db import migrate as migrations
from db.database import allow_creation, database
from fleet.cli.output import print_table
from fleet.cli.types import PROCESSES, THREADS

FLEET_SIZE = click.IntRange(0, 10_000)
PGBOUNCER = "docs/operations/postgresql.md#pgbouncer"


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


def server_slots() -> tuple[int, str] | None:
    """Connections the PostgreSQL server of DATABASE_URL takes from Fleet's role (max_connections
    less the reserved ones) and how that was worked out; None for SQLite."""
    if urlparse(get_settings().database_url).scheme == "sqlite":
        return None
    db = open_database(require_schema=False)
    found = dict(db.execute_sql(
        "SELECT name, setting FROM pg_settings WHERE name IN "
        "('max_connections', 'superuser_reserved_connections', 'reserved_connections')").fetchall())
    most = int(found["max_connections"])
    reserved = int(found.get("superuser_reserved_connections", 0)) + int(found.get("reserved_connections", 0))
    return most - reserved, f"max_connections {most} − {reserved} reserved (superuser_reserved_connections" + (
        ", reserved_connections)" if "reserved_connections" in found else ")")


@db_group.command("connections")
@click.option("--hosts", type=click.IntRange(1, 10_000), default=1, show_default=True,
              help="Machines running `fleet worker`.")
@click.option("-p", "--processes", type=PROCESSES, help="Worker processes a machine (default: one a CPU here).")
@click.option("-t", "--threads", type=THREADS, default=8, show_default=True, help="Threads a worker process.")
@click.option("--web", type=FLEET_SIZE, default=1, show_default=True, help="`fleet web` processes in all.")
@click.option("--web-threads", type=THREADS, default=8, show_default=True, help="Threads a `fleet web`.")
@click.option("--schedulers", type=FLEET_SIZE, default=1, show_default=True, help="`fleet scheduler` processes in all.")
@click.option("--cli", type=FLEET_SIZE, default=2, show_default=True, help="`fleet` commands running at once.")
def connections_command(hosts: int, processes: int | None, threads: int, web: int, web_threads: int,
                        schedulers: int, cli: int) -> None:
    """The most database connections each process may open, and whether a fleet of this size
    fits in the server's max_connections (exit code 1 when it does not)."""
    fleet = budget.Fleet(hosts=hosts, processes=processes or os.cpu_count() or 1, threads=threads, web=web,
                         web_threads=web_threads, schedulers=schedulers, cli=cli)
    table = Table("process", "each", "why", "how many", "connections", box=None)
    table.add_row(f"worker process (-t {threads})", str(budget.worker_process(threads)),
                  f"{threads} threads + {budget.WORKER_EXTRA} (the JobLog writer, the last flush at shutdown)",
                  f"{hosts} hosts × {fleet.processes}", str(fleet.workers))
    table.add_row(f"fleet web (--threads {web_threads})", str(budget.web_process(web_threads)),
                  f"{web_threads} threads + {budget.WEB_EXTRA} spare", str(web), str(fleet.webs))
    table.add_row("fleet scheduler", str(budget.SCHEDULER), "its loop", str(schedulers),
                  str(schedulers * budget.SCHEDULER))
    table.add_row("fleet command", str(budget.CLI), "while it runs", str(cli), str(cli * budget.CLI))
    table.add_row("total", "", "", "", str(fleet.total))
    print_table(table)
    slots = server_slots()
    if slots is None:
        click.echo("SQLite: no server connection limit (one machine; PostgreSQL for several).")
        return
    available, how = slots
    click.echo(f"server: {available} connections for Fleet = {how}, at {redact_url(get_settings().database_url)}")
    if fleet.total <= available:
        click.echo(f"fits: {fleet.total} ≤ {available} ({available - fleet.total} to spare).")
        return
    fewer = fleet.threads_that_fit(available)
    fix = f"run the workers with -t {fewer} or fewer, or " if fewer >= 1 else ""
    click.echo(f"does NOT fit: {fleet.total} > {available} ({fleet.total - available} over). To fix: {fix}"
               f"put PgBouncer (transaction pooling) between the fleet and PostgreSQL ({PGBOUNCER}), "
               f"or raise max_connections on the server.")
    raise SystemExit(1)


commands = [db_group]
