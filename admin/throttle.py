"""Slows down password guessing: failed logins are counted per account and per client
address (Flask-Limiter's fixed windows, kept in the state Redis so every web process
shares them), and a login is refused with 429 once either count is spent.

Every attempt first *reserves* a hit on both counters, atomically (a Redis INCR), before
its password is checked, so thirty parallel guesses get exactly the allowed number of
answers; a successful login gives back its own reservation and nothing else, so one
account's success never clears another's failures. Behind a load balancer the client
address is the one `FLEET_TRUSTED_PROXIES` lets werkzeug's ProxyFix read.

Without Redis (down, or RabbitMQ with no FLEET_STATE_REDIS_URL) the counts are kept in
this process, so logins still work and are still throttled.
"""
from __future__ import annotations

import hashlib
import logging
import time

from flask import Flask, current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter

from core.state import state_redis

ACCOUNT_LIMIT = parse("5 per 5 minutes")  # wrong passwords for one account, from anywhere
ADDRESS_LIMIT = parse("20 per 5 minutes")  # wrong passwords from one client address, for any account
MAX_FAILURES = ACCOUNT_LIMIT.amount
WINDOW = ACCOUNT_LIMIT.get_expiry()

log = logging.getLogger("fleet.panel")


def _hashed(value: str) -> str:
    """Keys of a bounded size whatever was typed into the email field."""
    return hashlib.sha256(value.encode(errors="replace")).hexdigest()[:32]


class LoginThrottle:
    def __init__(self, limiter: Limiter):
        self.limiter = limiter
        self.fallback = FixedWindowRateLimiter(MemoryStorage())

    def _counters(self, email: str, address: str) -> list[tuple[RateLimitItem, str, str]]:
        return [(ACCOUNT_LIMIT, "account", _hashed(email.strip().lower())), (ADDRESS_LIMIT, "address", _hashed(address))]

    def _with_fallback(self, call):
        try:
            return call(self.limiter.limiter)
        except StorageError:
            log.warning("login throttle: the state Redis does not answer; counting in this process", exc_info=True)
            return call(self.fallback)

    def reserve(self, email: str, address: str) -> int:
        """Take one attempt from both counters: 0 when the password may be checked, else the
        seconds until it may (and nothing is taken)."""
        def reserve(strategy) -> int:
            taken = []
            for item, kind, key in self._counters(email, address):
                if not strategy.hit(item, "fleet-login", kind, key):
                    for t_item, t_kind, t_key in taken + [(item, kind, key)]:
                        strategy.hit(t_item, "fleet-login", t_kind, t_key, cost=-1)
                    reset = strategy.get_window_stats(item, "fleet-login", kind, key).reset_time
                    return max(1, int(reset - time.time()) + 1)
                taken.append((item, kind, key))
            return 0

        return self._with_fallback(reserve)

    def release(self, email: str, address: str) -> None:
        """A successful login gives back the attempt it reserved (only that one)."""
        def release(strategy) -> None:
            for item, kind, key in self._counters(email, address):
                strategy.hit(item, "fleet-login", kind, key, cost=-1)

        self._with_fallback(release)


def init_app(app: Flask) -> None:
    client = state_redis()
    if client is not None:
        app.config["RATELIMIT_STORAGE_URI"] = "redis://"
        app.config["RATELIMIT_STORAGE_OPTIONS"] = {"connection_pool": client.connection_pool, "wrap_exceptions": True}
    else:
        app.config["RATELIMIT_STORAGE_URI"] = "memory://"
    app.config.setdefault("RATELIMIT_KEY_PREFIX", "fleet")
    limiter = Limiter(get_remote_address, app=app, strategy="fixed-window")
    app.extensions["fleet_login_throttle"] = LoginThrottle(limiter)


def login_throttle() -> LoginThrottle:
    return current_app.extensions["fleet_login_throttle"]
