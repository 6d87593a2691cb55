"""A few seconds of memory for what the panel reads often (the dashboard polls, a load
balancer asks /healthz, Prometheus scrapes /metrics): one computation per name and period
per web process, whatever the number of requests. Kept on the app, so each app has its own."""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from cachetools import TTLCache
from flask import current_app

T = TypeVar("T")
_lock = threading.Lock()
_MISSING = object()


def cached(name: str, seconds: float, compute: Callable[[], T]) -> T:
    with _lock:
        caches = current_app.extensions.setdefault("fleet_cache", {})
        cache = caches.setdefault(name, TTLCache(maxsize=1, ttl=seconds))
        value = cache.get(name, _MISSING)  # one look: `in` then `[]` raised KeyError when it expired between them
        if value is not _MISSING:
            return value
    value = compute()  # outside the lock: two requests may both compute once, never wait on each other
    with _lock:
        cache[name] = value
    return value
