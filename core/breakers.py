"""One circuit breaker per external service, its state in Redis so all workers share it.

Only failures that say the service itself is unhealthy (timeouts, connection errors,
5xx) count towards opening it; a 404 or a bad request does not.
"""
from __future__ import annotations

import threading
import time
import uuid

import pybreaker

from core.errors import FleetError, classify
from core.locks import RedisLock
from core.settings import get_settings
from core.state import state_redis

SERVICES = ("openai", "series_api")
TRIAL_TTL = 120  # seconds: a trial call's token expires if its caller dies
_breakers: dict[str, pybreaker.CircuitBreaker] = {}
_lock = threading.Lock()
_local = threading.local()
_local_trials: set[str] = set()  # without a state Redis, trials are per process


def _trial_key(service: str) -> str:
    return f"fleet:breaker:{service}:trial"


def _trial(client, service: str, token: str) -> RedisLock:
    return RedisLock(client, _trial_key(service), token, TRIAL_TTL)


def _take_trial(service: str) -> str | None:
    token = uuid.uuid4().hex
    client = state_redis()
    if client is None:
        with _lock:
            if service in _local_trials:
                return None
            _local_trials.add(service)
            return token
    return token if _trial(client, service, token).acquire() else None


def _end_trial(service: str, token: str) -> None:
    client = state_redis()
    if client is None:
        with _lock:
            _local_trials.discard(service)
    else:
        _trial(client, service, token).release()


def trial_in_progress(service: str) -> bool:
    client = state_redis()
    return bool(client.exists(_trial_key(service))) if client is not None else service in _local_trials


class SharedBreaker(pybreaker.CircuitBreaker):
    """pybreaker holds its lock for the whole protected call (its issue #55), which would let
    one worker thread at a time talk to the service. The state lives in Redis and is shared
    by every process anyway, so calls here may overlap while the breaker is closed.

    While it is half-open, exactly one call across the fleet is the trial: the caller that
    takes the Redis token `fleet:breaker:<service>:trial`; every other call fails with
    CircuitBreakerError, so its job keeps waiting (pybreaker alone lets every thread of
    every process through at once)."""

    def call(self, func, *args, **kwargs):
        if getattr(_local, "trial", None) == self.name or self.current_state == pybreaker.STATE_CLOSED:
            return self.state.call(func, *args, **kwargs)
        if _seconds_open(self) > 0:
            return self.state.call(func, *args, **kwargs)  # still open: pybreaker refuses the call
        token = _take_trial(self.name)
        if token is None:
            raise pybreaker.CircuitBreakerError(f"{self.name}: another trial call is in progress")
        _local.trial = self.name
        try:
            return self.state.call(func, *args, **kwargs)
        finally:
            _local.trial = None
            _end_trial(self.name, token)


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


def _seconds_open(cb: pybreaker.CircuitBreaker) -> float:
    if cb.current_state != pybreaker.STATE_OPEN:
        return 0.0
    opened_at = cb._state_storage.opened_at
    if opened_at is None:
        return 0.0
    opened = opened_at.timestamp() if hasattr(opened_at, "timestamp") else float(opened_at)
    return max(0.0, opened + cb.reset_timeout - time.time())


def seconds_to_wait(service: str) -> float:
    """0 when a call may go through now; else how long a job should wait: the rest of the time
    the breaker stays open, or a few seconds while another process makes the trial call."""
    cb = breaker(service)
    state = cb.current_state
    if state == pybreaker.STATE_CLOSED:
        return 0.0
    remaining = _seconds_open(cb)
    if remaining > 0:
        return remaining
    return max(1.0, min(5.0, cb.reset_timeout)) if trial_in_progress(service) else 0.0


def states() -> dict[str, str]:
    return {service: breaker(service).current_state for service in SERVICES}


def _known(service: str) -> pybreaker.CircuitBreaker:
    if service not in SERVICES:
        raise FleetError(f"no breaker {service!r}; the breakers are {', '.join(SERVICES)}", exit_code=2)
    return breaker(service)


def reset(service: str) -> str:
    """Close the breaker by hand (the service is known to be back); its state before."""
    cb = _known(service)
    before = cb.current_state
    cb.close()
    client = state_redis()
    if client is not None:
        client.delete(_trial_key(service))
    return before


def trip(service: str) -> str:
    """Open the breaker by hand for FLEET_CIRCUIT_RESET seconds (jobs that need the service wait,
    without spending retries); its state before."""
    cb = _known(service)
    before = cb.current_state
    cb.open()
    return before


def forget_breakers() -> None:
    """Drop the process's breaker objects (tests change settings between runs)."""
    with _lock:
        _breakers.clear()
