"""The Redis that holds state shared by every process: breakers, unique locks, tokens.

It is the broker's Redis unless FLEET_STATE_REDIS_URL names another (needed with RabbitMQ).
"""
from __future__ import annotations

from functools import lru_cache

import redis

from core.broker import redis_client
from core.settings import get_settings


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis_client(url)


def state_redis() -> redis.Redis | None:
    url = get_settings().state_redis_url
    return _client(url) if url else None
