"""Which hosts a service fails from, and which it answers: what a fleet-wide breaker opens on.

Every host has a breaker of its own for each service (core/breakers.py). When one opens, its
host is recorded here as failing, with the reason; the fleet-wide breaker opens only when the
service fails from two hosts or more, or from every host the fleet knows (the only one there
is). Hosts are known from the workers' presence records (their ids start with the host) and
from the calls that succeeded lately, so a host cut off from the provider alone is held back by
itself while the others keep working.

Keys, per service: `fleet:breaker:<service>:hosts:failing` (sorted set, host → when its breaker
opened), `…:hosts:why` (hash, host → JSON {code, message}), `…:hosts:ok` (sorted set, host → last
success, written at most once a second by a process's breaker).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

from core.identity import PRESENCE_INDEX, host_of
from core.redact import redact


def _key(service: str, what: str) -> str:
    return f"fleet:breaker:{service}:hosts:{what}"


@dataclass(frozen=True)
class HeldBack:
    """A host whose own breaker for a service is open while the fleet's is not (or both are)."""
    service: str
    host: str
    since: float  # unix time its breaker last opened
    code: str
    message: str

    @property
    def seconds_ago(self) -> float:
        return max(0.0, time.time() - self.since)


def note_success(client, service: str, host: str) -> None:
    client.zadd(_key(service, "ok"), {host: time.time()})


def note_open(client, service: str, host: str, code: str, message: str) -> None:
    with client.pipeline() as pipe:
        pipe.zadd(_key(service, "failing"), {host: time.time()})
        pipe.hset(_key(service, "why"), host, json.dumps({"code": code, "message": redact(message)[:300]}))
        pipe.execute()


def note_closed(client, service: str, host: str) -> None:
    with client.pipeline() as pipe:
        pipe.zrem(_key(service, "failing"), host).hdel(_key(service, "why"), host).execute()


def forget_failing(client, service: str) -> None:
    """The fleet-wide breaker closed: the service answers again, every host starts afresh."""
    client.delete(_key(service, "failing"), _key(service, "why"))


def failing_hosts(client, service: str, window: float) -> set[str]:
    return {h.decode() for h in client.zrangebyscore(_key(service, "failing"), time.time() - window, "+inf")}


def known_hosts(client, service: str, window: float) -> set[str]:
    """Hosts with a live worker, or whose calls to the service succeeded, within `window` seconds."""
    since = time.time() - window
    with client.pipeline(transaction=False) as pipe:
        pipe.zrangebyscore(PRESENCE_INDEX, since, "+inf")
        pipe.zrangebyscore(_key(service, "ok"), since, "+inf")
        workers, answered = pipe.execute()
    return {host_of(w.decode()) for w in workers} | {h.decode() for h in answered}


def fails_fleet_wide(client, service: str, host: str, window: float) -> bool:
    """Does the service fail from more than one host, or from every host there is?"""
    failing = failing_hosts(client, service, window) | {host}
    return len(failing) >= 2 or not (known_hosts(client, service, window) - failing)


def held_back(client, services, window: float) -> list[HeldBack]:
    found = []
    for service in services:
        with client.pipeline(transaction=False) as pipe:
            pipe.zrangebyscore(_key(service, "failing"), time.time() - window, "+inf", withscores=True)
            pipe.hgetall(_key(service, "why"))
            failing, why = pipe.execute()
        for host, since in failing:
            reason = json.loads(why.get(host, b"{}") or b"{}")
            found.append(HeldBack(service, host.decode(), since, reason.get("code", ""), reason.get("message", "")))
    return found
