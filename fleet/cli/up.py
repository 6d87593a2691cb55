"""`fleet up`: migrations first, then every process under supervisord in the foreground.

One fleet a var/ directory: locks held by the whole process tree make a second `fleet up`
refuse instead of piling workers on top of the first, and every process dies with its
parent, so killing `fleet up` or supervisord leaves no orphan (`core.lifecycle`).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import click

from core.broker import check_broker
from core.errors import FleetError
from core.lifecycle import TREE_LOCK_ENV, die_with_parent, lock_fleet
from core.net import ensure_port_free
from core.settings import Settings
from core.state import require_shared_state
from fleet.cli.supervisor import Program, programs, supervisord_config


def hold_fleet_lock(var_dir: Path) -> tuple[int, int]:
    """The one-fleet locks for as long as this process (and its tree) lives, or refuse."""
    locks = lock_fleet(var_dir)
    if isinstance(locks, str):
        raise FleetError(locks)
    return locks


def prepare(settings: Settings, *, demo: bool, host: str, port: int) -> None:
    """Everything that can fail before anything starts: port, broker, migrations, demo data."""
    from db.migrate import migrate
    from fleet.cli.database import open_database

    ensure_port_free(host, port)
    require_shared_state(settings)
    # the workers' Prometheus counters of an earlier run (multiprocess files): this fleet starts at zero
    shutil.rmtree(settings.metrics_dir, ignore_errors=True)
    if not settings.embedded_broker:
        check_broker(settings)
    for name in migrate(open_database(require_schema=False)):
        click.echo(f"fleet: applied migration {name}")
    if demo:
        from fleet.cli.demo import seed_demo

        seed_demo(settings)


def describe(program: Program, processes: int, threads: int) -> str:
    if program.name == "worker":
        return f"worker ({processes} process(es) × {threads} threads)"
    return program.name


def run_fleet(settings: Settings, *, demo: bool, host: str, port: int, processes: int, threads: int) -> int:
    from db.database import allow_creation

    allow_creation(True)  # a new fleet starts here: its SQLite database is created by the migrations
    lock, tree_lock = hold_fleet_lock(settings.var_dir)
    prepare(settings, demo=demo, host=host, port=port)
    extra: list[Program] = []
    env = dict(os.environ, FLEET_VAR_DIR=str(settings.var_dir), PYTHONUNBUFFERED="1", FLEET_LOG_FORMAT="json",
               **{TREE_LOCK_ENV: str(settings.var_dir / "fleet.tree.lock")})
    if demo:
        from fleet.cli.demo import demo_programs

        extra, demo_env = demo_programs(settings)
        env.update(demo_env)
    (settings.var_dir / "log").mkdir(parents=True, exist_ok=True)
    config = settings.var_dir / "supervisord.conf"
    listed = programs(settings, host=host, port=port, processes=processes, threads=threads, extra=extra)
    config.write_text(supervisord_config(settings, listed))

    click.echo(f"fleet: var/ {settings.var_dir} ({settings.var_dir_found_by})")
    click.echo(f"fleet: starting {', '.join(describe(p, processes, threads) for p in listed)}; Ctrl-C stops all")
    click.echo(f"fleet: panel at http://{host}:{port}/admin")
    click.echo(f"fleet: logs (JSON lines) in {settings.var_dir / 'log'}/<program>.log; "
               "a program that fails or stops is reported here")
    me = os.getpid()
    supervisord = subprocess.Popen(
        [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(config)],
        env=env,
        start_new_session=True,
        pass_fds=(tree_lock,),  # supervisord holds the tree lock; its programs take it themselves
        preexec_fn=lambda: die_with_parent(expected_parent=me),  # `fleet up` killed: supervisord stops all
    )

    def forward(signum, frame):
        if supervisord.poll() is None:
            supervisord.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    try:
        code = supervisord.wait()
    finally:
        os.close(tree_lock)
        os.close(lock)
    click.echo("fleet: stopped")
    return 0 if code in (0, -signal.SIGTERM) else code
