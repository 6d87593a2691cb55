"""`fleet up`: migrations first, then every process under supervisord in the foreground.

One fleet a var/ directory: a lock file held while it runs makes a second
`fleet up` refuse instead of piling workers on top of the first.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import click

from core.broker import check_broker
from core.errors import FleetError
from core.net import ensure_port_free
from core.settings import Settings
from fleet.cli.supervisor import Program, programs, supervisord_config


def hold_fleet_lock(var_dir: Path) -> int:
    """Lock var/fleet.lock for as long as this process lives, or refuse."""
    var_dir.mkdir(parents=True, exist_ok=True)
    path = var_dir / "fleet.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise FleetError(f"a fleet is already running on {var_dir} (pid {owner}); stop it first (Ctrl-C in its terminal)")
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def prepare(settings: Settings, *, demo: bool, host: str, port: int) -> None:
    """Everything that can fail before anything starts: port, broker, migrations, demo data."""
    from db.migrate import migrate
    from fleet.cli.database import open_database

    ensure_port_free(host, port)
    # the workers' Prometheus counters of an earlier run (multiprocess files): this fleet starts at zero
    shutil.rmtree(settings.metrics_dir, ignore_errors=True)
    if not settings.embedded_broker:
        check_broker(settings)
    for name in migrate(open_database(require_schema=False)):
        click.echo(f"fleet: applied migration {name}")
    if demo:
        from fleet.cli.demo import seed_demo

        seed_demo(settings)


def run_fleet(settings: Settings, *, demo: bool, host: str, port: int, processes: int, threads: int) -> int:
    lock = hold_fleet_lock(settings.var_dir)
    prepare(settings, demo=demo, host=host, port=port)
    extra: list[Program] = []
    env = dict(os.environ, FLEET_VAR_DIR=str(settings.var_dir), PYTHONUNBUFFERED="1")
    if demo:
        from fleet.cli.demo import demo_programs

        extra, demo_env = demo_programs(settings)
        env.update(demo_env)
    (settings.var_dir / "log").mkdir(parents=True, exist_ok=True)
    config = settings.var_dir / "supervisord.conf"
    listed = programs(settings, host=host, port=port, processes=processes, threads=threads, extra=extra)
    config.write_text(supervisord_config(settings, listed))

    click.echo(f"fleet: starting {', '.join(p.name for p in listed)}; Ctrl-C stops all")
    click.echo(f"fleet: panel at http://{host}:{port}/admin")
    supervisord = subprocess.Popen(
        [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(config)],
        env=env,
        start_new_session=True,
        pass_fds=(),
    )

    def forward(signum, frame):
        if supervisord.poll() is None:
            supervisord.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    try:
        code = supervisord.wait()
    finally:
        os.close(lock)
    click.echo("fleet: stopped")
    return 0 if code in (0, -signal.SIGTERM) else code
