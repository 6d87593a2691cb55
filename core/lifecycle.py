"""No process outlives its fleet: children die with their parent, and the one-fleet lock is
held by every process of the tree.

`fleet up` holds `var/fleet.lock` (one `fleet up` at a time) and a shared lock on
`var/fleet.tree.lock`, which every process it starts takes too (`join_fleet`, inherited
across exec and fork: redis-server, Dramatiq's processes). A new `fleet up` needs that lock
exclusively, so it refuses while any process of an earlier fleet is still alive. And each
process asks Linux for SIGTERM when its parent dies (PR_SET_PDEATHSIG): if supervisord or
`fleet up` is killed, everything below it stops gracefully instead of running on under PID 1.
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1
TREE_LOCK_ENV = "FLEET_TREE_LOCK"  # set by `fleet up` for the processes it starts
WORKER_MAIN_ENV = "FLEET_WORKER_MAIN"  # pid of Dramatiq's main process, set by `fleet worker`


def die_with_parent(expected_parent: int | None = None, sig: int = signal.SIGTERM) -> None:
    """Have `sig` sent to this process when its parent ends; if the parent is gone already
    (not `expected_parent`, or this process was handed to PID 1), end now."""
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    parent = os.getppid()
    if parent == 1 or (expected_parent is not None and parent != expected_parent):
        os.kill(os.getpid(), sig)


def _open_lock(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def lock_fleet(var_dir: Path) -> tuple[int, int] | str:
    """For `fleet up`: (the fleet lock, the tree lock, shared now), or why it cannot start."""
    fd = _open_lock(var_dir / "fleet.lock")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        return f"a fleet is already running on {var_dir} (pid {owner}); stop it first (Ctrl-C in its terminal)"
    tree = _open_lock(var_dir / "fleet.tree.lock")
    try:
        fcntl.flock(tree, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(tree)
        os.close(fd)
        return f"processes of an earlier fleet on {var_dir} are still stopping; try again in a few seconds"
    fcntl.flock(tree, fcntl.LOCK_SH)  # only one `fleet up` gets here (fleet.lock), so the downgrade is safe
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    os.set_inheritable(tree, True)
    return fd, tree


def join_fleet() -> None:
    """In a process `fleet up` started: die with the parent, and hold the tree lock for life."""
    path = os.environ.get(TREE_LOCK_ENV)
    if not path:
        return
    die_with_parent()
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_SH)
    os.set_inheritable(fd, True)  # kept across exec (redis-server, dramatiq) and fork (its workers)
