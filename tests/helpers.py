"""Small helpers the tests share: run the real `fleet` command, wait for a condition."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse


def fleet(*args: str, env: dict | None = None, input: str | None = None, timeout: float = 60, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "fleet", *args],
        env=env, input=input, capture_output=True, text=True, timeout=timeout, cwd=cwd,
    )


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


class RedisServer:
    """A private redis-server with AOF on, for tests that kill and restart it on the same port."""

    def __init__(self, workdir: Path):
        from core.net import free_port

        self.port = free_port()
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "RedisServer":
        import redis

        from core.embedded_redis import redis_server_binary

        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(self.workdir), "--loglevel", "warning"],
            stdout=subprocess.DEVNULL)
        wait_for(lambda: _pings(redis.Redis(port=self.port)), timeout=20, message="redis-server up")
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def _pings(client) -> bool:
    import redis

    try:
        return client.ping()
    except redis.RedisError:
        return False


def start_worker(log_path: Path, *args: str, env: dict, module: str = "tests.worker_actors") -> subprocess.Popen:
    """`dramatiq <module>` in its own process group, output to `log_path`."""
    log = open(log_path, "w")
    return subprocess.Popen([sys.executable, "-m", "dramatiq", module, *args],
                            env={**env, "PYTHONUNBUFFERED": "1"}, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop_worker(proc: subprocess.Popen, timeout: float = 30) -> int:
    """SIGTERM to Dramatiq's main process (as supervisord does); the group is killed if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
