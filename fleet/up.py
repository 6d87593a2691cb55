"""`fleet up`: migrations first, then every process under supervisord in the foreground.

One fleet a var/ directory: a lock file held while it runs makes a second
`fleet up` refuse instead of piling workers on top of the first.
"""
from __future__ import annotations

import fcntl
import os
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from fleet import FleetError
from fleet.broker import check_broker
from fleet.net import ensure_port_free
from fleet.settings import Settings

STOP_GRACE = 6  # seconds a program gets after SIGTERM; Ctrl-C must end the fleet within 10


@dataclass
class Program:
    name: str
    args: list[str]
    priority: int
    oneshot: bool = False  # runs once after the others start, is not restarted

    @property
    def command(self) -> str:
        return shlex.join([sys.executable, "-m", "fleet", *self.args])


def programs(settings: Settings, *, host: str, port: int, processes: int, threads: int, extra: list[Program]) -> list[Program]:
    listed = []
    if settings.embedded_broker:
        listed.append(Program("redis", ["redis"], 10))
    listed += extra
    listed += [
        Program("worker", ["worker", "-p", str(processes), "-t", str(threads)], 30),
        Program("scheduler", ["scheduler"], 40),
        Program("web", ["web", "--host", host, "--port", str(port)], 50),
    ]
    return listed


def supervisord_config(settings: Settings, listed: list[Program]) -> str:
    var = settings.var_dir
    lines = [
        "[supervisord]",
        "nodaemon=true",
        f"logfile={var}/log/supervisord.log",
        f"pidfile={var}/supervisord.pid",
        f"childlogdir={var}/log",
        "loglevel=warn",
        "",
        "[unix_http_server]",
        f"file={var}/supervisor.sock",
        "chmod=0700",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{var}/supervisor.sock",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
    ]
    for program in listed:
        lines += [
            "",
            f"[program:{program.name}]",
            f"command={program.command}",
            f"priority={program.priority}",
            f"autorestart={'false' if program.oneshot else 'true'}",
            f"startsecs={0 if program.oneshot else 1}",
            "startretries=5",
            f"stopwaitsecs={STOP_GRACE}",
            # SIGTERM to the program only: Dramatiq's main process forwards it to its workers,
            # and a second SIGTERM sent to the whole group would kill them without a graceful stop.
            "stopasgroup=false",
            "killasgroup=true",
            "redirect_stderr=true",
            "stdout_logfile=/dev/fd/1",
            "stdout_logfile_maxbytes=0",
        ]
    return "\n".join(lines) + "\n"


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
    if not settings.embedded_broker:
        check_broker(settings)
    for name in migrate(open_database(require_schema=False)):
        click.echo(f"fleet: applied migration {name}")
    if demo:
        from fleet.demo import seed_demo

        seed_demo(settings)


def run_fleet(settings: Settings, *, demo: bool, host: str, port: int, processes: int, threads: int) -> int:
    lock = hold_fleet_lock(settings.var_dir)
    prepare(settings, demo=demo, host=host, port=port)
    extra: list[Program] = []
    env = dict(os.environ, FLEET_VAR_DIR=str(settings.var_dir), PYTHONUNBUFFERED="1")
    if demo:
        from fleet.demo import demo_programs

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
