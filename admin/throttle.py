"""Slows down password guessing: after MAX_FAILURES failed logins from one address
within WINDOW seconds, that address gets 429 until the window ends.

Counters live in the state Redis so every web process shares them; without one
(RabbitMQ and no FLEET_STATE_REDIS_URL) they are kept per process.
"""
from __future__ import annotations

import threading
import time

from core.state import state_redis

MAX_FAILURES = 5
WINDOW = 300

_local: dict[str, tuple[int, float]] = {}
_lock = threading.Lock()


def _key(address: str) -> str:
    return f"fleet:login-failures:{address}"


def retry_after(address: str) -> int:
    """Seconds until this address may try again; 0 when it may now."""
    client = state_redis()
    if client is not None:
        with client.pipeline(transaction=False) as pipe:
            count, ttl = pipe.get(_key(address)).ttl(_key(address)).execute()
        return max(int(ttl), 1) if count and int(count) >= MAX_FAILURES else 0
    with _lock:
        count, until = _local.get(address, (0, 0.0))
        left = until - time.monotonic()
        return max(int(left), 1) if count >= MAX_FAILURES and left > 0 else 0


def record_failure(address: str) -> None:
    client = state_redis()
    if client is not None:
        with client.pipeline() as pipe:
            pipe.set(_key(address), 0, ex=WINDOW, nx=True).incr(_key(address)).execute()  # the window starts at the first failure
        return
    with _lock:
        count, until = _local.get(address, (0, 0.0))
        if until <= time.monotonic():
            count, until = 0, time.monotonic() + WINDOW
        _local[address] = (count + 1, until)


def clear(address: str) -> None:
    client = state_redis()
    if client is not None:
        client.delete(_key(address))
    else:
        with _lock:
            _local.pop(address, None)
