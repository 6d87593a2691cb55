"""Small helpers the tests share: run the real `fleet` command (or, as a test's setup, what
`fleet db migrate` and `fleet accounts create` do, in-process), start and stop processes and
in-process workers, wait for a condition, look at a PostgreSQL database's connections."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import dramatiq

REPO = Path(__file__).resolve().parents[1]


def migrated(database_url: str) -> str:
    """The database at this URL migrated in this process, as `fleet db migrate` leaves it: the
    setup of a test that is about another command, without a process start (tests/test_database.py
    and tests/test_cli_input.py run the command itself)."""
    from db.database import open_database
    from db.migrate import migrate

    db = open_database(database_url)
    try:
        migrate(db)
    finally:
        db.close_all()
    return database_url


def create_accounts(database_url: str, accounts: dict[str, str], password: str) -> None:
    """Panel accounts ({email: role}, one password) in the database at this URL, made in this
    process as `fleet accounts create` makes them (tests/test_accounts.py runs the command)."""
    from actors.accounts import create_account
    from db.database import open_database
    from db.models.accounts import PanelAccount

    db = open_database(database_url)
    try:
        with PanelAccount.bind_ctx(db):
            for email, role in accounts.items():
                create_account(email, password, role)
    finally:
        db.close_all()


def fleet(*args: str, env: dict | None = None, input: str | None = None, timeout: float = 60, cwd=None):
    """`fleet *args` run to its end: the CompletedProcess, its output as text."""
    return subprocess.run(
        [sys.executable, "-m", "fleet", *args],
        env=env, input=input, capture_output=True, text=True, timeout=timeout, cwd=cwd,
    )


def usage_error(*args: str) -> str | None:
    """What click answers to `fleet *args` before the command runs: the message of its usage
    error (printed with exit code 2), or None when the command line parses. Nothing runs, in
    this process or another: for a command's many bad-input cases (tests/test_cli_input.py runs
    real processes for the one line on stderr and the exit code)."""
    import click

    from fleet.cli import cli, register_commands

    register_commands()
    command, name, context, words = cli, "fleet", None, list(args)
    try:
        while isinstance(command, click.Group):
            context = click.Context(command, info_name=name, parent=context)
            if not words:
                return "Missing command."
            name, *words = words
            command = command.get_command(context, name)
            if command is None:
                return f"No such command {name!r}."
        command.make_context(name, words, parent=context)
    except click.UsageError as exc:
        return exc.format_message()
    return None


@contextlib.contextmanager
def tmpfs(directory: Path, size: str):
    """A small tmpfs mounted on `directory` (a full disk on demand); skips the test where
    mounting is not permitted. Unmounted (lazily, should a process still hold it) on exit."""
    import pytest

    directory.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(directory)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], capture_output=True)


def wait_for(condition, timeout: float = 20, interval: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


class Processes:
    """The long-running processes of one test (`fleet worker`, `fleet scheduler`, `dramatiq …`):
    each in its own process group (so a SIGKILL of the group takes its children too), its output
    in a log file of the test; whatever still runs is stopped when the test ends (the fixture
    `processes`), pass or fail."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.started: list[subprocess.Popen] = []
        self._files = []

    def start(self, *args: str, module: str = "fleet", env: dict | None = None, name: str | None = None,
              prefix: tuple[str, ...] | list[str] = (), **popen) -> subprocess.Popen:
        """`python -m <module> *args` from the repository, output to `<name>-<n>.log` (the name
        defaults to the first argument: `worker-0.log`) unless `stdout` is given; `prefix` runs
        it through another command (tests/netns.py: inside a host's namespace)."""
        if "stdout" not in popen:
            log = open(self.logs / f"{name or (args[0] if args else module)}-{len(self.started)}.log", "w")
            self._files.append(log)
            popen.update(stdout=log, stderr=subprocess.STDOUT)
        proc = subprocess.Popen([*prefix, sys.executable, "-m", module, *args], cwd=popen.pop("cwd", REPO),
                                env={**(env if env is not None else os.environ), "PYTHONUNBUFFERED": "1"},
                                start_new_session=True, **popen)
        self.started.append(proc)
        return proc

    def worker(self, *args: str, module: str = "tests.worker_actors", env: dict | None = None,
               name: str = "worker") -> subprocess.Popen:
        """`dramatiq <module> *args`: a worker with the test actors."""
        return self.start(module, *args, module="dramatiq", env=env, name=name)

    @staticmethod
    def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """`sig` to the process (SIGTERM to Dramatiq's main process, as supervisord sends it;
        SIGKILL to its whole group, as a crash of the host would); its exit code. One that does
        not exit within `timeout` is killed with its group, and TimeoutExpired raised."""
        if proc.poll() is None:
            if sig == signal.SIGKILL:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise

    def stop_all(self) -> None:
        running = [p for p in self.started if p.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        for proc in running:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # its children too, had it left any
            except ProcessLookupError:
                pass
            proc.wait()
        for file in self._files:
            file.close()


class InProcessWorker(dramatiq.Worker):
    """Dramatiq's Worker in the test process. Stopping it also takes the middleware it added
    off the broker: Dramatiq leaves it there, so the next worker's start logged "adding a
    middleware of the same type twice", and a queue declared later got a consumer on every
    stopped worker, taking messages that no thread would work."""

    def __init__(self, broker, **options):
        options.setdefault("worker_timeout", 100)
        super().__init__(broker, **options)
        self._own_middleware = None

    def start(self) -> None:
        before = list(self.broker.middleware)
        super().start()
        self._own_middleware = next(m for m in self.broker.middleware if m not in before)

    def stop(self, timeout: int = 600_000) -> None:
        super().stop(timeout)
        if self._own_middleware in self.broker.middleware:
            remove = getattr(self.broker, "remove_middleware", self.broker.middleware.remove)
            remove(self._own_middleware)


def terminate_backends(database_url: str) -> int:
    """pg_terminate_backend for every connection to this one database (never another's)."""
    import psycopg2

    name = urlparse(database_url).path.lstrip("/")
    admin = psycopg2.connect(database_url.rpartition("/")[0] + "/postgres")
    admin.autocommit = True
    try:
        cursor = admin.cursor()
        cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                       "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
        return cursor.fetchone()[0]
    finally:
        admin.close()


def backends(database_url: str) -> int:
    """Connections open to this one database."""
    import psycopg2

    name = urlparse(database_url).path.lstrip("/")
    admin = psycopg2.connect(database_url.rpartition("/")[0] + "/postgres")
    try:
        cursor = admin.cursor()
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,))
        return cursor.fetchone()[0]
    finally:
        admin.close()
