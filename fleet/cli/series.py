"""`fleet series …` and `fleet episodes …`: add series, run the sweeps now, dispatch one data job, status."""
from __future__ import annotations

import json
from collections.abc import Iterator

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from actors import series as ops
from core.errors import FleetError
from fleet.cli.database import open_database
from fleet.cli.types import HOURS, ID

WHAT = {"import-missing-data": "without data", "check-data-updates": "with data older than {hours:g} hour(s)"}


def _run_sweep(kind: ops.Kind, action: str, **params) -> None:
    """Run the sweep in this process, a progress bar on a terminal, then its one line of counts."""
    open_database(broker=True)
    task_name = f"{kind.name}.{action}"
    console = Console()
    if console.is_terminal:
        columns = (TextColumn(f"{task_name}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            bar = progress.add_task(task_name, total=ops.sweep_rows(task_name, **params))
            counts = ops.run_here(task_name, progress=lambda found: progress.update(bar, completed=found), **params)
    else:
        counts = ops.run_here(task_name, **params)
    what = WHAT[action].format(**params)
    click.echo(f"Found {counts['found']} {kind.name} {what}; dispatched {counts['enqueued']} data job(s), "
               f"{counts['already_queued']} already queued.")


def _sync(kind: ops.Kind, tvdb_id: int) -> None:
    open_database(broker=True)
    row = ops.find(kind, tvdb_id)
    noun = kind.model.__name__
    if row is None:
        raise FleetError(f"no {noun.lower()} with TVDB id {tvdb_id}")
    if ops.dispatch(kind, row.id) is None:
        click.echo(f"A data job for {noun} #{row.id} (TVDB {tvdb_id}) is already queued or running.")
    else:
        click.echo(f"Dispatched a data job for {noun} #{row.id} (TVDB {tvdb_id}).")


def _status(kind: ops.Kind, hours: float, as_json: bool) -> None:
    open_database()
    counts = ops.status_counts(kind, hours)
    if as_json:
        click.echo(json.dumps(counts))
        return
    skipped = counts["without_data"] - counts["without_data_to_import"]
    click.echo(f"Without data: {counts['without_data']} ({skipped} skipped by import-missing-data: "
               "the API refused their record)")
    click.echo(f"Older than {hours:g} hour(s): {counts['older']}")
    click.echo(f"Fresh: {counts['fresh']}")
    failed = counts["failed_by_code"]
    click.echo(f"Failed: {sum(failed.values())}" + "".join(f"\n  {code}: {n}" for code, n in failed.items()))


def _hours_option(default: int):
    return click.option("--hours", type=HOURS, default=default, show_default=True,
                        help="Data older than this many hours is out of date.")


def _kind_group(kind: ops.Kind, help_text: str) -> click.Group:
    """The commands `series` and `episodes` share."""
    group = click.Group(kind.name, help=help_text)

    @group.command("import-missing-data")
    @click.option("--include-failed", is_flag=True, help="Also rows whose record the API refused (404 and the like).")
    def import_missing_command(include_failed: bool) -> None:
        """Dispatch a data job for every row never imported; runs now, here."""
        _run_sweep(kind, "import-missing-data", include_failed=include_failed)

    @group.command("check-data-updates")
    @_hours_option(kind.default_hours)
    def check_updates_command(hours: float) -> None:
        """Dispatch a data job for every row whose data is older than --hours; runs now, here."""
        _run_sweep(kind, "check-data-updates", hours=hours)

    @group.command("sync")
    @click.argument("tvdb_id", type=ID)
    def sync_command(tvdb_id: int) -> None:
        """Dispatch the data job of one row now (by its TVDB id)."""
        _sync(kind, tvdb_id)

    @group.command("status")
    @_hours_option(kind.default_hours)
    @click.option("--json", "as_json", is_flag=True, help="One JSON object.")
    def status_command(hours: float, as_json: bool) -> None:
        """Rows without data, older than --hours, fresh, and failed by error code."""
        _status(kind, hours, as_json)

    return group


series_group = _kind_group(ops.SERIES, "Series data from the series API: add series, import, refresh, status.")
episodes_group = _kind_group(ops.EPISODES, "Episode data (episodes come from their series' record): import, refresh, status.")


def _ids_in(path: str) -> Iterator[int]:
    """The ids of a file, one a line (blank lines ignored), read as it goes; a line that is not
    an id is a usage error naming it."""
    with open(path) as lines:
        for number, line in enumerate(lines, start=1):
            text = line.strip()
            if text.isdigit():
                yield int(text)
            elif text:
                raise click.UsageError(f"{path}, line {number}: {text[:40]!r} is not a TVDB id")


@series_group.command("add")
@click.argument("tvdb_ids", nargs=-1, type=ID)
@click.option("--name", help="The series' name until its data is imported (one id only).")
@click.option("--from-file", "from_file", type=click.Path(exists=True, dir_okay=False),
              help="Read TVDB ids from this file, one a line (checked whole before any is added).")
def add_command(tvdb_ids: tuple[int, ...], name: str | None, from_file: str | None) -> None:
    """Add series by TVDB id, without data: the next import-missing-data sweep imports them."""
    if bool(tvdb_ids) == bool(from_file):
        raise click.UsageError("give TVDB ids or --from-file (not both)")
    if name is not None and len(tvdb_ids) != 1:
        raise click.UsageError("--name goes with exactly one TVDB id")
    try:
        if from_file:
            for _ in _ids_in(from_file):  # a first pass, so a bad line adds nothing
                pass
        open_database()
        created, known = ops.add_series(_ids_in(from_file) if from_file else tvdb_ids, name)
    except (OSError, UnicodeDecodeError) as exc:
        raise FleetError(f"cannot read {from_file}: {getattr(exc, 'strerror', None) or exc}") from None
    click.echo(f"Added {created} series ({known} already known); "
               "`fleet series import-missing-data` imports their data.")


commands = [series_group, episodes_group]
