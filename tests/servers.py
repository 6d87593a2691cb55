"""Throwaway servers for the tests and the benchmarks: a private redis-server on a free port,
and a scratch PostgreSQL database on the server of a given URL. Each is gone after its block,
whatever happened inside it."""
from __future__ import annotations

import contextlib
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

START_TIMEOUT = 20  # seconds a redis-server may take to answer
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"  # a development machine's own server


class RedisServer:
    """A private redis-server on 127.0.0.1 (or `bind`) and a free port, its files in `workdir`.

    `persistent` turns AOF on (fsync every second), for tests that kill it and start it again
    on the same port and expect what was written to be there.
    """

    def __init__(self, workdir: Path, *, persistent: bool = False, bind: str = "127.0.0.1"):
        from core.net import free_port

        self.port = free_port()
        self.workdir = Path(workdir)
        self.persistent = persistent
        self.bind = bind
        self.url = f"redis://{bind}:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        import redis

        from core.embedded_redis import redis_server_binary

        self.workdir.mkdir(parents=True, exist_ok=True)
        persistence = ["--appendonly", "yes", "--appendfsync", "everysec"] if self.persistent else ["--appendonly", "no"]
        self.proc = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", self.bind, "--protected-mode", "no",
             "--save", "", *persistence,
             "--dir", str(self.workdir), "--loglevel", "warning"],
            stdout=subprocess.DEVNULL)
        client = redis.Redis(host=self.bind, port=self.port)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while True:
                try:
                    client.ping()
                    return self
                except redis.ConnectionError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError(f"redis-server on port {self.port} did not start") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@contextlib.contextmanager
def scratch_postgres(server_url: str, prefix: str = "fleet_scratch") -> Iterator[str]:
    """The URL of a new, empty database on the server of `server_url` (any database of it),
    dropped with its connections when the block ends."""
    import psycopg2

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(server_url)
    admin.autocommit = True
    try:
        admin.cursor().execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{server_url.rpartition('/')[0]}/{name}"
        finally:
            admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


class PostgresServer:
    """A private PostgreSQL server (Debian's binaries, `initdb` as the `postgres` user when run as
    root) on 127.0.0.1 and a free port, for tests that stop it and start it again. Its data is in
    a directory of its own under /tmp (the server's user must reach it), removed by `remove()`."""

    def __init__(self):
        import tempfile

        from core.net import free_port

        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="fleet-pg-"))
        self.datadir = self.workdir / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @staticmethod
    def available() -> str | None:
        """Why a private server cannot be made here, or None."""
        import os
        import pwd
        import shutil

        if not (_postgres_bin("initdb") or shutil.which("initdb")):
            return "PostgreSQL's initdb is not installed"
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                return "no `postgres` user to run a private PostgreSQL as"
        return None

    def _run(self, *command: str) -> None:
        import os
        import shutil

        program = _postgres_bin(command[0]) or shutil.which(command[0])
        as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*as_user, program, *command[1:]], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=60)

    def init(self) -> PostgresServer:
        import os
        import shutil

        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.datadir), "-A", "trust", "-U", "postgres", "--no-sync")
        return self.start()

    def start(self) -> PostgresServer:
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.workdir} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off")
        self._run("pg_ctl", "-D", str(self.datadir), "-o", options, "-l", str(self.workdir / "server.log"),
                  "-w", "-t", str(START_TIMEOUT), "start")
        return self

    def stop(self) -> None:
        """A fast shutdown: sessions are ended, connections refused until `start`."""
        self._run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        import shutil

        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _postgres_bin(name: str) -> str | None:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(found[-1]) if found else None
