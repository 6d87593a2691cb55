"""This process's name in the ledgers, locks and heartbeats: `host~suffix:pid`.

The suffix is four random hex digits chosen once per process (again after a fork), so two
containers that share a host name and both run as PID 1 still differ. The pid stays last,
after the last `:`, where operators and tests read it back.
"""
from __future__ import annotations

import os
import socket

PRESENCE_INDEX = "fleet:workers"  # sorted set of consuming workers' ids by last heartbeat (actors/middleware/presence.py)
ALIVE_PREFIX = "fleet:alive:"  # + process id: set by a consuming process's heartbeat, with its TTL (read by unique_alive.lua)

_chosen: tuple[int, str] = (0, "")  # (pid, suffix) of the process that chose it


def host_name() -> str:
    """The host this process runs on, as the fleet names it (breakers, presence)."""
    return socket.gethostname()


def process_id() -> str:
    """`host~suffix:pid` of this process, the same on every call within it."""
    global _chosen
    pid = os.getpid()
    if _chosen[0] != pid:
        _chosen = (pid, os.urandom(2).hex())
    return f"{host_name()}~{_chosen[1]}:{pid}"


def alive_key(process: str) -> str:
    return ALIVE_PREFIX + process


def host_of(worker_id: str) -> str:
    """The host part of a process or worker id."""
    return worker_id.partition("~")[0]
