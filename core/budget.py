"""Request budgets of external APIs, shared by every process and thread of the fleet.

A provider counts requests per API key, not per worker, so the budget is one moving window
(the `limits` library's, a Lua script on a Redis list) in the state Redis: at most `rate`
requests in any second, whoever sends them. The requests are also spaced 1/rate apart (a
"theoretical arrival time" in Redis, as in GCRA): a window that frees its slots at once would
let every waiting thread send in the same few milliseconds, and a burst that straddles the
provider's second boundary counts in two of its seconds. A 429 from the provider shrinks the budget to
half for its Retry-After (again on each further 429, down to 1 a second); it returns to
the configured rate when that time has passed.

Without a state Redis (RabbitMQ and no FLEET_STATE_REDIS_URL) the window is per process.
"""
from __future__ import annotations

import random
import threading
import time

from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import MovingWindowRateLimiter

from core.errors import JobError
from core.settings import get_settings
from core.state import state_redis

KEY_PREFIX = "fleet:budget"
# KEYS: the next free moment. ARGV: the spacing (ms). 0 when this request may go now (the next
# one then waits the spacing), else the milliseconds until it may.
_SPACE = """
local now = redis.call('time')
local now_ms = now[1] * 1000 + math.floor(now[2] / 1000)
local next_free = tonumber(redis.call('get', KEYS[1]) or '0')
if next_free > now_ms then return next_free - now_ms end
redis.call('set', KEYS[1], now_ms + tonumber(ARGV[1]), 'px', tonumber(ARGV[1]) + 1000)
return 0
"""
MAX_WAIT = 2.0  # seconds a request waits in its thread for a slot; beyond that its job is deferred
_budgets: dict[str, ApiBudget | None] = {}
_lock = threading.Lock()


class OverBudget(JobError):
    """No request slot within the wait allowed. The job is deferred by `defer_seconds` (until a
    slot is expected to free up) without spending a retry; its JobLog row says `deferred`,
    ERR_RATE_LIMIT, "over the shared … budget"."""

    def __init__(self, service: str, rate: int, seconds: float):
        super().__init__("ERR_RATE_LIMIT", f"over the shared {service} budget of {rate} request(s)/s; "
                                           "deferred, no retry spent")
        self.service = service
        self.defer_seconds = seconds


class ApiBudget:
    def __init__(self, service: str, rate: int, client=None):
        self.service = service
        self.rate = rate
        self._client = client
        storage = (RedisStorage("redis://", connection_pool=client.connection_pool, key_prefix=KEY_PREFIX)
                   if client is not None else MemoryStorage())
        self._limiter = MovingWindowRateLimiter(storage)
        self._shrink_key = f"{KEY_PREFIX}:{service}:shrunk"
        self._local_shrink: tuple[int, float] | None = None  # (rate, until) without a Redis
        self._space = client.register_script(_SPACE) if client is not None else None
        self._space_key = f"{KEY_PREFIX}:{service}:next"
        self._local_next = 0.0  # monotonic, without a Redis
        self._local_lock = threading.Lock()

    # -- spending --------------------------------------------------------------------------
    def try_acquire(self) -> float:
        """Take one request slot: 0 when taken, else the seconds until one frees up."""
        rate = self.current_rate()
        spaced = self._spaced(rate)
        if spaced:
            return spaced
        items = [RateLimitItemPerSecond(self.rate)]
        if rate < self.rate:
            items.append(RateLimitItemPerSecond(rate))  # a window of its own, only while shrunk
        for item in items:  # a slot of the full window spent and then refused by the shrunk one is lost, never overspent
            if not self._limiter.hit(item, self.service):
                reset = self._limiter.get_window_stats(item, self.service).reset_time
                return max(0.005, reset - time.time())
        return 0.0

    def _spaced(self, rate: int) -> float:
        """0 when a request may go now by the spacing (and the next must wait), else the seconds to wait."""
        spacing = 1.0 / rate
        if self._space is None:
            with self._local_lock:
                now = time.monotonic()
                if self._local_next > now:
                    return self._local_next - now
                self._local_next = now + spacing
                return 0.0
        return self._space(keys=[self._space_key], args=[max(1, int(spacing * 1000))]) / 1000

    def acquire(self, max_wait: float = MAX_WAIT) -> float:
        """Take one request slot, waiting up to `max_wait` seconds; the seconds waited.
        Raises OverBudget when no slot frees up in time."""
        started = time.monotonic()
        while True:
            wait = self.try_acquire()
            if not wait:
                return time.monotonic() - started
            if time.monotonic() - started + wait > max_wait:
                raise OverBudget(self.service, self.current_rate(), wait)
            time.sleep(wait + random.uniform(0, 0.01))  # so waiting threads do not all wake at once

    # -- the provider's 429 ----------------------------------------------------------------
    def shrink(self, seconds: float) -> int:
        """Halve the budget for `seconds` (a 429's Retry-After); the rate now in force."""
        seconds = max(0.1, seconds)
        rate = max(1, self.current_rate() // 2)
        if self._client is None:
            self._local_shrink = (rate, time.monotonic() + seconds)
        else:
            self._client.set(self._shrink_key, rate, px=int(seconds * 1000))
        return rate

    def current_rate(self) -> int:
        if self._client is None:
            shrunk = self._local_shrink
            return shrunk[0] if shrunk and shrunk[1] > time.monotonic() else self.rate
        value = self._client.get(self._shrink_key)
        return min(self.rate, int(value)) if value else self.rate

    # -- what the dashboard shows ----------------------------------------------------------
    def usage(self) -> dict:
        """Requests in the last second, the configured and the current rate, how long a shrink lasts."""
        stats = self._limiter.get_window_stats(RateLimitItemPerSecond(self.rate), self.service)
        shrunk_for = 0.0
        if self._client is not None:
            shrunk_for = max(0, self._client.pttl(self._shrink_key)) / 1000
        elif self._local_shrink:
            shrunk_for = max(0.0, self._local_shrink[1] - time.monotonic())
        return {"service": self.service, "rate": self.rate, "current_rate": self.current_rate(),
                "used_last_second": self.rate - stats.remaining, "shrunk_for_seconds": round(shrunk_for, 1)}


def _rates() -> dict[str, int]:
    """The services with a budget, and their configured rate."""
    return {"series_api": get_settings().series_api_rate}


def budget(service: str | None) -> ApiBudget | None:
    """The process's budget object for `service`, or None when that service has no budget."""
    if not service:
        return None
    with _lock:
        if service not in _budgets:
            rate = _rates().get(service)
            _budgets[service] = ApiBudget(service, rate, state_redis()) if rate else None
        return _budgets[service]


def forget_budgets() -> None:
    """Drop the process's budget objects (tests change settings between runs)."""
    with _lock:
        _budgets.clear()
