"""One circuit breaker per external service, its state in Redis so all workers share it.

Only failures that say the service itself is unhealthy (timeouts, connection errors,
5xx) count towards opening it; a 404 or a bad request does not.
"""
from __future__ import annotations

import threading
import time

import pybreaker

from core.errors import classify
from core.settings import get_settings
from core.state import state_redis

SERVICES = ("openai", "series_api")
_breakers: dict[str, pybreaker.CircuitBreaker] = {}
_lock = threading.Lock()


class SharedBreaker(pybreaker.CircuitBreaker):
    """pybreaker holds its lock for the whole protected call (its issue #55), which would let
    one worker thread at a time talk to the service. The state lives in Redis and is shared
    by every process anyway, so calls here may overlap."""

    def call(self, func, *args, **kwargs):
        return self.state.call(func, *args, **kwargs)


def _healthy_failure(exc: BaseException) -> bool:
    return not classify(exc).code.trips_breaker


def breaker(service: str) -> pybreaker.CircuitBreaker:
    """The process's breaker object for `service` (state lives in Redis)."""
    with _lock:
        found = _breakers.get(service)
        if found is None:
            settings = get_settings()
            client = state_redis()
            storage = (
                pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, client, namespace=f"fleet:breaker:{service}")
                if client is not None
                else pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
            )
            found = SharedBreaker(
                fail_max=settings.circuit_failures,
                reset_timeout=settings.circuit_reset,
                exclude=[_healthy_failure],
                state_storage=storage,
                name=service,
            )
            _breakers[service] = found
        return found


def seconds_until_half_open(service: str) -> float:
    """0 when calls may go through (closed or half-open), else how long the breaker stays open."""
    cb = breaker(service)
    if cb.current_state != pybreaker.STATE_OPEN:
        return 0.0
    opened_at = cb._state_storage.opened_at
    if opened_at is None:
        return 0.0
    opened = opened_at.timestamp() if hasattr(opened_at, "timestamp") else float(opened_at)
    return max(0.0, opened + cb.reset_timeout - time.time())


def states() -> dict[str, str]:
    return {service: breaker(service).current_state for service in SERVICES}


def forget_breakers() -> None:
    """Drop the process's breaker objects (tests change settings between runs)."""
    with _lock:
        _breakers.clear()
