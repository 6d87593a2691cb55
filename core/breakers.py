"""Circuit breakers per external service, their state in Redis so all workers share them.

Each host has a breaker of its own for a service (`host_breaker`), shared by the processes of
that host; the fleet-wide one (`breaker`) opens only when the service fails from more than one
host, or from the only host there is (core/breaker_hosts.py), so a host cut off from the
provider alone holds back its own jobs while the other hosts keep working.

Only failures that say the service itself is unhealthy (timeouts, connection errors,
5xx) count towards opening them; a 404 or a bad request does not.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid

import pybreaker

from core import breaker_hosts
from core.errors import FleetError, classify
from core.identity import host_name
from core.locks import RedisLock
from core.settings import get_settings
from core.state import state_redis

SERVICES = ("openai", "series_api")
log = logging.getLogger("fleet.breakers")
TRIAL_TTL = 120
# A job a held-back host fetched goes back to its queue this soon at most: another host runs
# it rather than it waiting out this host's breaker.
HELD_BACK_DEFER = 5.0
SUCCESS_NOTE_EVERY = 1.0  # seconds between two notes of a host's success by one process  # seconds: a trial call's token expires if its caller dies
_breakers: dict[str, pybreaker.CircuitBreaker] = {}
_host_breakers: dict[tuple[str, str], pybreaker.CircuitBreaker] = {}
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


class FleetBreaker(SharedBreaker):
    """While closed, a call goes through this host's breaker; while open or half-open, through
    this one (one trial call across the fleet)."""

    def call(self, func, *args, **kwargs):
        if getattr(_local, "trial", None) != self.name and self.current_state == pybreaker.STATE_CLOSED:
            return host_breaker(self.name).call(func, *args, **kwargs)
        return super().call(func, *args, **kwargs)


class _HostWatch(pybreaker.CircuitBreakerListener):
    """Tells core/breaker_hosts.py what a host's breaker sees, and opens the fleet's breaker
    when the service fails fleet-wide."""

    def __init__(self, service: str, host: str):
        self.service, self.host = service, host
        self._noted_at = 0.0  # last success noted (at most one a second)

    def failure(self, cb, exc):
        _local.failed = (cb.name, exc)

    def success(self, cb):
        _local.failed = None
        client = state_redis()
        if client is not None and time.monotonic() - self._noted_at >= SUCCESS_NOTE_EVERY:
            self._noted_at = time.monotonic()
            breaker_hosts.note_success(client, self.service, self.host)

    def state_change(self, cb, old_state, new_state):
        failed = getattr(_local, "failed", None)
        if new_state.name == pybreaker.STATE_OPEN and failed and failed[0] == cb.name:
            _local.failed = None  # this thread's call tripped it (not a state read from Redis)
            self._opened(failed[1])
        elif new_state.name == pybreaker.STATE_CLOSED and old_state is not None:
            client = state_redis()
            if client is not None:
                breaker_hosts.note_closed(client, self.service, self.host)

    def _opened(self, exc: BaseException) -> None:
        client = state_redis()
        error = classify(exc)
        if client is not None:
            breaker_hosts.note_open(client, self.service, self.host, error.code.code, error.message)
            window = get_settings().heartbeat_timeout
            if not breaker_hosts.fails_fleet_wide(client, self.service, self.host, window):
                log.warning("breaker open on this host only: its jobs wait, the other hosts go on",
                            extra={"service": self.service, "host": self.host, "error_code": error.code.code})
                return
        log.warning("breaker open fleet-wide", extra={"service": self.service, "host": self.host,
                                                      "error_code": error.code.code})
        breaker(self.service).open()


class _FleetWatch(pybreaker.CircuitBreakerListener):
    def state_change(self, cb, old_state, new_state):
        client = state_redis()
        if new_state.name == pybreaker.STATE_CLOSED and old_state is not None and client is not None:
            breaker_hosts.forget_failing(client, cb.name)


def _healthy_failure(exc: BaseException) -> bool:
    return not classify(exc).code.trips_breaker


def _storage(namespace: str):
    client = state_redis()
    return (pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, client, namespace=namespace)
            if client is not None else pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED))


def _made(cls, name: str, namespace: str, listener) -> pybreaker.CircuitBreaker:
    settings = get_settings()
    return cls(fail_max=settings.circuit_failures, reset_timeout=settings.circuit_reset, exclude=[_healthy_failure],
               state_storage=_storage(namespace), listeners=[listener], name=name)


def breaker(service: str) -> pybreaker.CircuitBreaker:
    """The process's fleet-wide breaker object for `service` (state lives in Redis)."""
    with _lock:
        if service not in _breakers:
            _breakers[service] = _made(FleetBreaker, service, f"fleet:breaker:{service}", _FleetWatch())
        return _breakers[service]


def host_breaker(service: str, host: str | None = None) -> pybreaker.CircuitBreaker:
    """The breaker of `service` for one host (this one unless given), shared by its processes."""
    host = host or host_name()
    with _lock:
        if (service, host) not in _host_breakers:
            _host_breakers[(service, host)] = _made(SharedBreaker, f"{service}@{host}",
                                                    f"fleet:breaker:{service}:host:{host}", _HostWatch(service, host))
        return _host_breakers[(service, host)]


def _seconds_open(cb: pybreaker.CircuitBreaker) -> float:
    if cb.current_state != pybreaker.STATE_OPEN:
        return 0.0
    opened_at = cb._state_storage.opened_at
    if opened_at is None:
        return 0.0
    opened = opened_at.timestamp() if hasattr(opened_at, "timestamp") else float(opened_at)
    return max(0.0, opened + cb.reset_timeout - time.time())


def _wait(cb: pybreaker.CircuitBreaker) -> float:
    if cb.current_state == pybreaker.STATE_CLOSED:
        return 0.0
    remaining = _seconds_open(cb)
    if remaining > 0:
        return remaining
    return max(1.0, min(5.0, cb.reset_timeout)) if trial_in_progress(cb.name) else 0.0


def seconds_to_wait(service: str, host: str | None = None) -> float:
    """0 when a call may go through now; else how long a job should wait: the rest of the time
    the fleet's breaker stays open (or, while it is closed, this host's, at most
    HELD_BACK_DEFER), or a few seconds while another process makes the trial call."""
    cb = breaker(service)
    if cb.current_state != pybreaker.STATE_CLOSED:
        return _wait(cb)
    return min(_wait(host_breaker(service, host)), HELD_BACK_DEFER)


def states() -> dict[str, str]:
    return {service: breaker(service).current_state for service in SERVICES}


def held_back() -> list[breaker_hosts.HeldBack]:
    """Hosts whose own breaker for a service is open, with the reason (the dashboard's list)."""
    client = state_redis()
    return breaker_hosts.held_back(client, SERVICES, get_settings().heartbeat_timeout) if client is not None else []


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
        _host_breakers.clear()
