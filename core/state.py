"""The Redis that holds state shared by every process: breakers, unique locks, tokens.

It is the broker's Redis unless FLEET_STATE_REDIS_URL names another (needed with RabbitMQ).
"""
from __future__ import annotations

from functools import lru_cache

import redis

from core.broker import redis_client
from core.settings import Settings, SettingsError, get_settings


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis_client(url)


def state_redis() -> redis.Redis | None:
    url = get_settings().state_redis_url
    return _client(url) if url else None


def require_shared_state(settings: Settings) -> None:
    """Workers, web and scheduler share unique locks, breakers and the login throttle through
    Redis; with RabbitMQ and no FLEET_STATE_REDIS_URL each process would keep its own."""
    if settings.state_redis_url is None and not settings.allow_local_state:
        raise SettingsError("FLEET_STATE_REDIS_URL", "must be set with RabbitMQ (unique jobs, breakers and the "
                            "login throttle are shared through it); FLEET_ALLOW_LOCAL_STATE=1 runs a "
                            "single-process trial without it")
