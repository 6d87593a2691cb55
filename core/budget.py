"""Request budgets of external APIs, shared by every process and thread of the fleet.

A provider counts requests per API key, not per worker, so the budget is one moving window
(the `limits` library's, a Lua script on a Redis list) in the state Redis: at most `rate`
requests in any second, whoever sends them. The requests are also spaced 1/rate apart (a
"theoretical arrival time" in Redis, as in GCRA): a window that frees its slots at once would
let every waiting thread send in the same few milliseconds, and a burst that straddles the
provider's second boundary counts in two of its seconds. A 429 from the provider shrinks the budget to
half for its Retry-After (again on each further 429, down to 1 a second); it returns to
the configured rate when that time has passed.

The spacing is `Lanes`, one mechanism for every provider: a lane a limit, each a "next free
moment" in Redis moved by one Lua script, so OpenAI's requests and tokens a minute
(core.openai_budget) use the same reservations as the series API's requests a second.

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
# Spacing, as GCRA ("theoretical arrival time") does it, one lane a limit. KEYS: each lane's next
# free moment (microseconds of Redis time). ARGV: the longest wait allowed (µs), then for each lane
# its spacing (µs a unit), its cost (units) and its tolerance (µs it may run ahead: 0 spaces every
# call, a provider's bucket of C units tolerates (C - cost) units). A call may start once every lane
# allows it; when that is within the wait allowed, it takes its place (each lane moves on by its
# cost) and {1, µs until then} comes back, else {0, µs it would have to wait} and nothing changes.
_RESERVE = """
local t = redis.call('time')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local start = now
for i, key in ipairs(KEYS) do
  local free = tonumber(redis.call('get', key) or '0') - tonumber(ARGV[3 * i + 1])
  if free > start then start = free end
end
if start - now > tonumber(ARGV[1]) then return {0, start - now} end
for i, key in ipairs(KEYS) do
  local free = tonumber(redis.call('get', key) or '0')
  if free < start then free = start end
  free = free + tonumber(ARGV[3 * i - 1]) * tonumber(ARGV[3 * i])
  redis.call('set', key, string.format('%d', free), 'px', math.floor((free - now) / 1000) + 1000)
end
return {1, start - now}
"""
# Move a lane's next free moment. KEYS[1]: the lane. ARGV[1]: µs to add (negative gives back what a
# call did not use, never before now); ARGV[2]: 1 to hold the lane until at least now + ARGV[1] instead.
_MOVE = """
local t = redis.call('time')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local free = tonumber(redis.call('get', KEYS[1]) or '0')
if free < now then free = now end
local delta = tonumber(ARGV[1])
if ARGV[2] == '1' then
  if now + delta > free then free = now + delta end
else
  free = free + delta
end
if free <= now then redis.call('del', KEYS[1]) return 0 end
redis.call('set', KEYS[1], string.format('%d', free), 'px', math.floor((free - now) / 1000) + 1000)
return 1
"""


class Lanes:
    """The spacing of calls to one provider, one lane a limit (requests, tokens), in the state
    Redis (or this process without one): `reserve` takes a call's place, `move` corrects a lane."""

    def __init__(self, prefix: str, names: tuple[str, ...], client=None):
        self.keys = [f"{prefix}:{name}" for name in names]
        self._client = client
        self._reserve = client.register_script(_RESERVE) if client is not None else None
        self._move = client.register_script(_MOVE) if client is not None else None
        self._local = {key: 0.0 for key in self.keys}  # µs of time.time(), without a Redis
        self._lock = threading.Lock()

    def reserve(self, lanes: list[tuple[float, float, float]], max_wait: float) -> tuple[bool, float]:
        """(spacing µs a unit, cost, tolerance µs) a lane → (placed?, seconds until its start)."""
        args = [int(max_wait * 1e6)] + [x for lane in lanes for x in (repr(float(lane[0])), lane[1], int(lane[2]))]
        if self._reserve is not None:
            placed, wait = self._reserve(keys=self.keys, args=args)
            return bool(placed), wait / 1e6
        with self._lock:
            now = time.time() * 1e6
            start = max([now] + [self._local[k] - lane[2] for k, lane in zip(self.keys, lanes)])
            if start - now > max_wait * 1e6:
                return False, (start - now) / 1e6
            for key, (spacing, cost, _) in zip(self.keys, lanes):
                self._local[key] = max(self._local[key], start) + spacing * cost
            return True, (start - now) / 1e6

    def move(self, lane: int, seconds: float, at_least: bool = False) -> None:
        key = self.keys[lane]
        if self._move is not None:
            self._move(keys=[key], args=[int(seconds * 1e6), "1" if at_least else "0"])
            return
        with self._lock:
            now = time.time() * 1e6
            free = max(self._local[key], now)
            self._local[key] = max(free, now + seconds * 1e6) if at_least else free + seconds * 1e6

    def ahead(self, lane: int) -> float:
        """Seconds the lane's next free moment lies ahead of now (0 when it is free)."""
        if self._client is None:
            return max(0.0, self._local[self.keys[lane]] / 1e6 - time.time())
        value = self._client.get(self.keys[lane])
        return max(0.0, int(value) / 1e6 - time.time()) if value else 0.0


MAX_WAIT = 2.0  # seconds a request waits in its thread for a slot; beyond that its job is deferred
_budgets: dict[str, ApiBudget | None] = {}
_lock = threading.Lock()


class Deferred(JobError):
    """The job must wait: it is deferred by `defer_seconds` without spending a retry (its JobLog
    row says `deferred`, the code and the sentence). `counts` says whether the wait adds to the
    message's FLEET_MAX_DEFER (a budget's wait does; the daily spend cap's does not)."""

    def __init__(self, code: str, message: str, seconds: float, *, counts: bool = True):
        super().__init__(code, message)
        self.defer_seconds = seconds
        self.counts_toward_max_defer = counts


class OverBudget(Deferred):
    """No request slot within the wait allowed: ERR_RATE_LIMIT, "over the shared … budget"."""

    def __init__(self, service: str, rate: int | str, seconds: float, unit: str = "request(s)/s"):
        super().__init__("ERR_RATE_LIMIT", f"over the shared {service} budget of {rate}{' ' + unit if unit else ''}; "
                                           "deferred, no retry spent", seconds)
        self.service = service


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
        self._lanes = Lanes(f"{KEY_PREFIX}:{service}", ("next",), client)

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
        placed, wait = self._lanes.reserve([(1e6 / rate, 1, 0)], max_wait=0)
        return 0.0 if placed else max(wait, 0.001)

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
