"""The `fleet` command. Each group lives in a module of its own."""
from __future__ import annotations

import sys

import click

from core import trace
from core.errors import FleetError
from core.settings import SettingsError
from fleet import __version__


class FleetGroup(click.Group):
    """Runs each command under a new trace id; turns Fleet's own errors into one line
    on stderr and their exit code."""

    def invoke(self, ctx: click.Context):
        try:
            with trace.traced():
                return super().invoke(ctx)
        except SettingsError as exc:
            click.echo(f"fleet: {exc}", err=True)
            ctx.exit(2)
        except FleetError as exc:
            click.echo(f"fleet: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=FleetGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fleet")
def cli() -> None:
    """Fleet: background jobs on Dramatiq, with a scheduler and an operator panel."""


def _register() -> None:
    from fleet.cli import accounts, database, jobs, processes, series, simulate, workouts

    for module in (processes, database, accounts, jobs, workouts, series, simulate):
        for command in module.commands:
            cli.add_command(command)


def main() -> None:
    # The command modules import the domains, which boot Fleet and so read the settings:
    # a bad value stops here with one line too.
    try:
        _register()
    except SettingsError as exc:
        click.echo(f"fleet: {exc}", err=True)
        sys.exit(2)
    cli(prog_name="fleet")
