"""The `fleet` command. Each group lives in a module of its own."""
from __future__ import annotations

import sys

import click

from core import trace
from core.errors import FleetError, classify, is_infrastructure
from core.settings import SettingsError
from db.database import DatabaseMissing, allow_creation
from fleet import __version__


def unwritable(exc: OSError) -> str | None:
    """One line for a file Fleet cannot create under its var/ directory (or the SQLite
    database's), else None: any other OSError is not a settings problem."""
    from pathlib import Path

    from core.settings import get_settings

    if exc.filename is None:
        return None
    try:
        var_dir = get_settings().var_dir
    except SettingsError:
        return None
    path = Path(str(exc.filename)).absolute()
    if path != var_dir and var_dir not in path.parents and path.suffix != ".db":
        return None
    return f"cannot write {path} ({exc.strerror or exc}): FLEET_VAR_DIR ({var_dir}) must be a writable directory"


def exit_if_unwritable(exc: OSError) -> None:
    line = unwritable(exc)
    if line is not None:
        click.echo(f"fleet: {line}", err=True)
        sys.exit(2)


def missing_database(exc) -> str:
    """One line for a command run away from its fleet: the path looked at, how var/ was
    chosen, and how to point at the right one."""
    import os

    from core.settings import get_settings

    settings = get_settings()
    if "DATABASE_URL" in os.environ:
        how = "DATABASE_URL names it: check that URL"
    else:
        how = (f"var/ is {settings.var_dir} ({settings.var_dir_found_by}): run from the fleet's directory or set "
               "FLEET_VAR_DIR to its var/")
    return f"{exc}; {how} (`fleet db migrate` creates a new, empty fleet)"


# Commands that run until stopped log what they do (INFO); the others print their own lines
# and log only warnings and errors.
LONG_RUNNING = {"worker", "scheduler", "web", "redis", "up", "simulate", "demo"}


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
        except DatabaseMissing as exc:
            click.echo(f"fleet: {missing_database(exc)}", err=True)
            ctx.exit(2)
        except FleetError as exc:
            click.echo(f"fleet: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except OSError as exc:
            exit_if_unwritable(exc)
            raise
        except Exception as exc:
            if not is_infrastructure(exc):
                raise
            # Redis or the database refused: one line, no traceback. What the command printed
            # before was done; a job it committed is in the outbox (its own line says so).
            click.echo(f"fleet: {classify(exc).message}; the command stopped there", err=True)
            ctx.exit(1)


@click.group(cls=FleetGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fleet")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Fleet: background jobs on Dramatiq, with a scheduler and an operator panel."""
    import logging

    if ctx.invoked_subcommand not in LONG_RUNNING:
        logging.getLogger().setLevel(logging.WARNING)


def register_commands() -> None:
    """Adds every command and group to `cli`, once a process (main; a test that parses a command line)."""
    if cli.commands:
        return
    from fleet.cli import (
        accounts,
        ai,
        alerts,
        batches,
        controls,
        database,
        demo,
        jobs,
        processes,
        schedule,
        series,
        simulate,
        tokens,
        translations,
        workers,
        workouts,
    )
    from fleet.cli.audited import audit_commands

    for module in (processes, database, accounts, jobs, controls, workouts, series, batches, translations, ai, schedule,
                   alerts, tokens, simulate, demo, workers):
        for command in module.commands:
            cli.add_command(command)
    audit_commands(cli)


def main() -> None:
    from core.lifecycle import join_fleet

    join_fleet()  # a program of `fleet up`: dies with its parent, holds the fleet's lock
    allow_creation(False)  # `fleet db migrate` and `fleet up` allow it again
    # The command modules import the domains, which boot Fleet and so read the settings:
    # a bad value stops here with one line too.
    try:
        from core.logs import configure_logging
        from core.settings import get_settings

        configure_logging(get_settings())
        register_commands()
    except SettingsError as exc:
        click.echo(f"fleet: {exc}", err=True)
        sys.exit(2)
    except OSError as exc:
        exit_if_unwritable(exc)
        raise
    cli(prog_name="fleet")
