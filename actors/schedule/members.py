"""The schedulers: their heartbeats, and which of them leads."""
from __future__ import annotations

import json
from dataclasses import dataclass

from core.clock import fleet_time
from core.identity import process_id
from core.state import state_redis

LEADER_KEY = "fleet:scheduler:leader"  # the leader's id, with a short TTL it renews
MEMBERS_KEY = "fleet:scheduler:members"  # every live scheduler's id -> its heartbeat (JSON)
MEMBER_STALE = 10  # seconds without a heartbeat (one a second) after which a scheduler is gone


@dataclass(frozen=True)
class SchedulerInfo:
    id: str
    leader: bool
    heartbeat_age: float  # seconds
    started_at: str
    schedule: str
    digest: str


def scheduler_id() -> str:
    return process_id()


def leader() -> str | None:
    client = state_redis()
    value = client.get(LEADER_KEY) if client is not None else None
    return value.decode(errors="replace") if value else None


def heartbeat(client, info: dict) -> None:
    client.hset(MEMBERS_KEY, info["id"], json.dumps({**info, "heartbeat": fleet_time()}))


def schedulers() -> list[SchedulerInfo]:
    """Every scheduler with a recent heartbeat, the leader first; forgets those gone quiet."""
    client = state_redis()
    if client is None:
        return []
    current = leader()
    now = fleet_time()
    found, gone = [], []
    for key, value in client.hgetall(MEMBERS_KEY).items():
        info = json.loads(value)
        age = now - info["heartbeat"]
        if age > MEMBER_STALE:
            gone.append(key)
            continue
        found.append(SchedulerInfo(info["id"], info["id"] == current, max(0.0, age), info.get("started_at", ""),
                                   info.get("schedule", ""), info.get("digest", "")))
    if gone:
        client.hdel(MEMBERS_KEY, *gone)
    return sorted(found, key=lambda s: (not s.leader, s.id))
