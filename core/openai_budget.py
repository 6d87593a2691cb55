"""OpenAI's fleet-wide budget: requests and tokens a minute per API key, for every process,
thread and host together, in the state Redis.

The limits are OPENAI_RPM / OPENAI_TPM, or (0, the default) learned from the provider's
`x-ratelimit-limit-requests` / `-tokens` headers on its first answers: the first call goes alone
and the others wait for what it teaches (a cautious PROVISIONAL budget holds if it teaches nothing). Calls are spaced, never released in bursts: the requests lane lets one
call go every minute/RPM; the tokens lane is a bucket as large as TPM, as the provider keeps it,
which a call's reservation (its prompt estimate + `max_completion_tokens`) must fit in. The real
`usage` is settled after the answer, and `x-ratelimit-remaining-*` hold the lanes back when
something else spends the same key. A call that would wait longer than MAX_WAIT is deferred
(`OverBudget`, no retry spent). A 429 that still comes holds every call for its Retry-After and
halves the budget for as long again.

The minute is FLEET_OPENAI_WINDOW seconds, so tests can run a "minute" of a few seconds against a
simulator counting the same window; production leaves it at 60.
"""
from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass

from core.budget import KEY_PREFIX, Deferred, Lanes, OverBudget
from core.formats import roughly
from core.settings import Settings, get_settings
from core.state import state_redis

PREFIX = f"{KEY_PREFIX}:openai"
PROVISIONAL = (60, 60_000)  # requests and tokens a window until the provider's headers tell its limits
MAX_WAIT = 5.0  # seconds (of a 60 s window) a call waits in its thread for its place; beyond that its job is deferred
HEADROOM = 0.97  # calls are spaced for 97 % of the request limit: a thread that wakes late never crowds a window
LATE = 0.5  # seconds a thread may wake late under load; a short test window keeps that much of it free too
LOW_WATER = 0.05  # share of a limit the provider must still have left before another call goes
LEARNED_TTL = 24 * 3600
HOUR_TTL = 3700


@dataclass(frozen=True)
class Limits:
    requests: int  # a window; 0 = no limit (the provider announces none)
    tokens: int
    requests_source: str  # "OPENAI_RPM", "learned" or "provisional"
    tokens_source: str
    shrunk: float  # 1.0, or the share left after 429s


def parse_duration(value: str | None) -> float | None:
    """OpenAI's `x-ratelimit-reset-*` header format ("1s", "6m0s", "20ms", "1h2m3.5s": fractions
    and milliseconds, unlike the spans of Fleet's own files) in seconds."""
    if not value:
        return None
    parts = re.findall(r"([\d.]+)(ms|h|m|s)", value.strip())
    if not parts:
        try:
            return float(value)
        except ValueError:
            return None
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * scale[unit] for n, unit in parts)


def _provisional(limits: Limits) -> bool:
    return "provisional" in (limits.requests_source, limits.tokens_source)


def _int_header(headers, name: str) -> int | None:
    value = headers.get(name) if headers is not None else None
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


class OpenAIBudget:
    service = "openai"

    def __init__(self, settings: Settings, client=None):
        self.window = settings.openai_window
        self.rpm, self.tpm = settings.openai_rpm, settings.openai_tpm
        self.enabled = settings.openai_budget
        self.timeout = settings.openai_timeout
        self._redis = client
        self._lanes = Lanes(PREFIX, ("requests", "tokens"), client)
        self._dispatch = Lanes(PREFIX, ("dispatch",), client)  # where bulk dispatches have got to
        self._local: dict[str, float] = {}  # learned limits and the shrink, without a Redis
        self._lock = threading.Lock()
        self._thread = threading.local()  # whether this thread's call is the probe

    # -- the limits in force --------------------------------------------------------------
    def _state(self) -> dict[str, str]:
        if self._redis is None:
            with self._lock:
                shrunk_until = self._local.get("shrunk_until", 0)
                state = {k: str(v) for k, v in self._local.items() if k in ("requests", "tokens")}
                if shrunk_until > time.time():
                    state["shrunk"] = str(self._local["shrunk"])
                return state
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(f"{PREFIX}:learned")
            pipe.get(f"{PREFIX}:shrunk")
            learned, shrunk = pipe.execute()
        state = {k.decode(): v.decode() for k, v in learned.items()}
        if shrunk:
            state["shrunk"] = shrunk.decode()
        return state

    def limits(self) -> Limits:
        state = self._state()
        shrunk = float(state.get("shrunk", 1.0))

        def pick(setting: int, name: str, provisional: int, variable: str) -> tuple[int, str]:
            if setting:
                return setting, variable
            if name in state:
                return int(state[name]), "learned"  # 0: the provider announces no limit
            return provisional, "provisional"

        requests, requests_source = pick(self.rpm, "requests", PROVISIONAL[0], "OPENAI_RPM")
        tokens, tokens_source = pick(self.tpm, "tokens", PROVISIONAL[1], "OPENAI_TPM")
        return Limits(requests and max(1, int(requests * shrunk)), tokens and max(1, int(tokens * shrunk)),
                      requests_source, tokens_source, shrunk)

    def per(self) -> str:
        return "min" if self.window == 60 else f"{self.window:g} s"

    # -- a call ---------------------------------------------------------------------------
    def reserve(self, tokens: int, max_wait: float | None = None) -> int:
        """Take a call's place for `tokens` (its estimate), waiting in this thread until it is
        due, at most `max_wait` seconds; the tokens reserved. OverBudget when the wait is longer."""
        if max_wait is None:
            max_wait = MAX_WAIT * min(1.0, self.window / 60)  # a shortened window shortens the waits
        limits = self.limits()
        cost = max(1, min(int(tokens), limits.tokens or int(tokens)))
        if not self.enabled or (_provisional(limits) and self._probe(max_wait)):
            self._count(requests=1, tokens=cost)
            return cost
        limits = self.limits()
        token_spacing = self.window * 1e6 / limits.tokens if limits.tokens else 0
        headroom = min(HEADROOM, 1 - LATE / self.window)
        lanes = [(self.window * 1e6 / (limits.requests * headroom) if limits.requests else 0, 1, 0),
                 (token_spacing, cost, (limits.tokens - cost) * token_spacing)]
        placed, wait = self._lanes.reserve(lanes, max_wait)
        if not placed:
            self.count_event("deferred")
            by_requests = self._lanes.ahead(0) >= wait - 0.01
            limit = (f"{limits.requests} requests/{self.per()}" if by_requests
                     else f"{limits.tokens} tokens/{self.per()}")
            raise OverBudget("OpenAI", limit, max(0.2, wait - max_wait / 2), unit="")
        if wait > 0:
            time.sleep(wait)
        self._count(requests=1, tokens=cost)
        return cost

    def _probe(self, max_wait: float) -> bool:
        """Before any limit is known, one call of the fleet goes alone and teaches them: True for
        that call. The others wait for its answer (up to `max_wait`; longer, their jobs are
        deferred), then take their place by the learned limits, or by the provisional ones if
        it taught nothing (it failed before the provider answered)."""
        if self._redis is None:
            return False
        key = f"{PREFIX}:probe"
        if self._redis.set(key, 1, nx=True, px=int((self.timeout + 5) * 1000)):
            self._thread.probing = True
            return True
        deadline = time.monotonic() + max_wait
        while self._redis.exists(key) and _provisional(self.limits()):
            if time.monotonic() >= deadline:
                self.count_event("deferred")
                raise Deferred("ERR_RATE_LIMIT", "the OpenAI limits are not known until the first answer, which "
                                                 "is still on its way; deferred, no retry spent", max_wait)
            time.sleep(0.02)
        return False

    def call_done(self) -> None:
        """The call has its answer (or failed): if it was the probe, the next one may go."""
        if getattr(self._thread, "probing", False):
            self._thread.probing = False
            self._redis.delete(f"{PREFIX}:probe")

    def settle(self, reserved: int, used: int) -> None:
        """The call used `used` tokens of the `reserved`: the tokens lane gets the difference back
        (or pays the excess)."""
        if used == reserved:
            return
        self._count(tokens=used - reserved)
        limits = self.limits()
        if self.enabled and limits.tokens:
            self._lanes.move(1, (used - reserved) * self.window / limits.tokens)

    def observe(self, headers, answered: bool = True) -> None:
        """Learn the limits from an answer's x-ratelimit-* headers, and hold the lanes back when
        the provider has less left than this budget expects (another user of the key). A real
        answer without the headers says the provider (a local server) announces no limits. The
        lanes are corrected before the limits are kept: calls waiting for the probe see both."""
        if headers is None:
            return
        announced = {"requests": _int_header(headers, "x-ratelimit-limit-requests"),
                     "tokens": _int_header(headers, "x-ratelimit-limit-tokens")}
        if self.enabled:
            current = self.limits()
            setting = {"requests": self.rpm, "tokens": self.tpm}
            for lane, name in ((0, "requests"), (1, "tokens")):
                limit = setting[name] or announced[name] or getattr(current, name)
                remaining = _int_header(headers, f"x-ratelimit-remaining-{name}")
                if remaining is None or not limit:
                    continue
                spacing = self.window / limit
                if lane == 1:  # the provider's bucket has `remaining`; ours is full at `limit`
                    self._lanes.move(1, (limit - remaining) * spacing, at_least=True)
                    continue
                low = max(1.0, limit * LOW_WATER)
                if remaining < low:
                    reset = parse_duration(headers.get("x-ratelimit-reset-requests"))
                    hold = (low - remaining) * spacing
                    self._lanes.move(0, min(hold, reset) if reset else hold, at_least=True)
        if answered:
            self._learn({name: max(0, value or 0) for name, value in announced.items()})
        else:
            learned = {name: value for name, value in announced.items() if value and value > 0}
            if learned:
                self._learn(learned)

    def _learn(self, learned: dict[str, int]) -> None:
        """Keep the limits the provider announced (a day; every answer renews them)."""
        if self._redis is None:
            with self._lock:
                self._local.update(learned)
            return
        key = f"{PREFIX}:learned"
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping=learned)
            pipe.expire(key, LEARNED_TTL)
            pipe.execute()

    def rate_limited(self, retry_after: float | None, message: str) -> Deferred:
        """A 429 came anyway: every call waits its Retry-After, the budget runs at half for as long
        again; the job is deferred without spending a retry."""
        wait = max(0.5, retry_after or self.window / max(1, self.limits().requests or 60))
        self.count_event("429")
        if not self.enabled:
            from core.errors import JobError

            return JobError("ERR_RATE_LIMIT", message, retry_after=wait)
        self._lanes.move(0, wait, at_least=True)
        shrunk = max(0.125, self.limits().shrunk / 2)
        if self._redis is None:
            with self._lock:
                self._local.update(shrunk=shrunk, shrunk_until=time.time() + 2 * wait)
        else:
            self._redis.set(f"{PREFIX}:shrunk", shrunk, px=int(2 * wait * 1000))
        self.count_event("deferred")
        deferred = Deferred("ERR_RATE_LIMIT", f"{message}; the shared budget waits {wait:.1f} s and runs at "
                                              f"{shrunk:.0%} for as long again; deferred, no retry spent", wait)
        deferred.retry_after = retry_after
        return deferred

    # -- bulk work -------------------------------------------------------------------------
    def stagger(self, calls: int) -> float:
        """Seconds to delay a job of `calls` calls sent in bulk, so a backlog reaches the workers
        as a stream at the budget instead of all at once (the first half window's worth goes now)."""
        limits = self.limits()
        if not self.enabled or calls <= 0 or not limits.requests:
            return 0.0
        spacing = self.window * 1e6 / limits.requests
        _, wait = self._dispatch.reserve([(spacing, calls, self.window * 1e6 / 2)], max_wait=10**8)
        return wait

    def seconds_for(self, calls: int, tokens_per_call: int = 0) -> float:
        """How long the budget needs for `calls` calls (of `tokens_per_call` tokens each)."""
        limits = self.limits()
        by_requests = calls * self.window / limits.requests if limits.requests else 0.0
        by_tokens = calls * tokens_per_call * self.window / limits.tokens if limits.tokens and tokens_per_call else 0.0
        return max(by_requests, by_tokens)

    def estimate(self, calls: int, tokens_per_call: int = 0) -> str:
        """"≈ 42 min at 240 requests/min" for a confirmation; "" when the budget sets no pace."""
        limits = self.limits()
        if not limits.requests or calls <= 0:
            return ""
        return f"≈ {roughly(max(1.0, self.seconds_for(calls, tokens_per_call)))} at {limits.requests} requests/{self.per()}"

    # -- what the dashboard shows ------------------------------------------------------------
    def _count(self, requests: int = 0, tokens: int = 0) -> None:
        if self._redis is None:
            return
        key = f"{PREFIX}:used:{int(time.time())}"
        with self._redis.pipeline(transaction=False) as pipe:
            if requests:
                pipe.hincrby(key, "requests", requests)
            if tokens:
                pipe.hincrby(key, "tokens", tokens)
            pipe.expire(key, int(self.window) + 120)
            pipe.execute()

    def count_event(self, name: str) -> None:
        """A 429 or a deferral, counted a minute for the last hour."""
        if self._redis is None:
            return
        key = f"{PREFIX}:{name}:{int(time.time() // 60)}"
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, HOUR_TTL)
            pipe.execute()

    def last_hour(self, name: str) -> int:
        if self._redis is None:
            return 0
        minute = int(time.time() // 60)
        values = self._redis.mget([f"{PREFIX}:{name}:{m}" for m in range(minute - 59, minute + 1)])
        return sum(int(v) for v in values if v)

    def used(self) -> tuple[int, int]:
        """Requests and tokens (reserved, then settled) in the last window."""
        if self._redis is None:
            return 0, 0
        now = int(time.time())
        seconds = range(now - math.ceil(self.window) + 1, now + 1)
        with self._redis.pipeline(transaction=False) as pipe:
            for second in seconds:
                pipe.hmget(f"{PREFIX}:used:{second}", "requests", "tokens")
            rows = pipe.execute()
        return (sum(int(r or 0) for r, _ in rows), sum(int(t or 0) for _, t in rows))


_budget: OpenAIBudget | None = None
_budget_lock = threading.Lock()


def openai_budget() -> OpenAIBudget:
    """The process's OpenAI budget (the state is in Redis; this is a handle on it)."""
    global _budget
    with _budget_lock:
        if _budget is None:
            _budget = OpenAIBudget(get_settings(), state_redis())
        return _budget


def forget_openai_budget() -> None:
    global _budget
    with _budget_lock:
        _budget = None
