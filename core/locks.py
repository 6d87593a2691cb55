"""One Redis lock: a key valued with its owner's token, taken when free (or already the owner's),
renewed and released only by its owner, and expiring on its own when the owner dies.

The overlap lock of scheduled runs, the scheduler's leader lease, the sweep lock and a breaker's
trial token are all this lock; each keeps its own key and TTL.
"""
from __future__ import annotations

import logging

from core.errors import FleetError
from core.lua import lua

log = logging.getLogger("fleet.locks")

_TAKE = lua(__file__, "lock_take")
_RENEW = lua(__file__, "lock_renew")
_RELEASE = lua(__file__, "lock_release")


class LockHeld(FleetError):
    """The lock is another owner's."""

    def __init__(self, lock: RedisLock, holder: str | None):
        super().__init__(f"{lock.key} is held by {holder or 'another owner'}")
        self.lock, self.holder = lock, holder


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


class RedisLock:
    """`with RedisLock(client, key, token, ttl):` holds the lock for the block (LockHeld when it is
    another's) and releases it on every way out; `renew()` while the block runs keeps it."""

    def __init__(self, client, key: str, token, ttl: float):
        self.client = client
        self.key = key
        self.token = str(token)
        self.ttl = ttl

    def acquire(self, ttl: float | None = None) -> bool:
        """Take the lock if it is free or already ours, for `ttl` (else the lock's) seconds."""
        return bool(_TAKE(self.client, [self.key], [self.token, _ms(ttl or self.ttl)]))

    def renew(self, ttl: float | None = None) -> bool:
        """Give our lock `ttl` (else the lock's) more seconds; False when it is not (or no longer) ours."""
        return bool(_RENEW(self.client, [self.key], [self.token, _ms(ttl or self.ttl)]))

    def release(self) -> bool:
        """Delete the lock if it is ours; False when it is not (or no longer) ours."""
        return bool(_RELEASE(self.client, [self.key], [self.token]))

    def holder(self) -> str | None:
        """The token of whoever holds the lock now, or None."""
        value = self.client.get(self.key)
        return value.decode(errors="replace") if value else None

    def __enter__(self) -> RedisLock:
        if not self.acquire():
            raise LockHeld(self, self.holder())
        return self

    def __exit__(self, *exc) -> None:
        if not self.release():
            log.warning("lock had expired before its release", extra={"lock": self.key})


def acquire_all(client, locks: list[RedisLock]) -> list[bool]:
    """Try to take every lock, in one round trip; whether each was taken."""
    with client.pipeline(transaction=False) as pipe:
        for lock in locks:
            _TAKE(pipe, [lock.key], [lock.token, _ms(lock.ttl)])
        return [bool(taken) for taken in pipe.execute()]
