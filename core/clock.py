"""One clock for the fleet: the state Redis's `TIME`, not each host's.

Every Fleet process that works on time (workers through their presence heartbeat, the
scheduler at each of its heartbeats, the web when it answers the Health page, the dashboard
or /metrics) measures how far its own clock is from Redis's: `offset` is this process's clock
minus the fleet's (positive: ahead), measured around one `TIME` round trip. The scheduler
decides its slots by `fleet_datetime()` (this process's clock corrected by its offset), so a
host whose clock drifted neither fires early nor misses slots. An offset over `MAX_OFFSET`
is logged as a warning (once a minute) and every process's last offset is kept in the hash
`fleet:clock` (process id -> JSON), which the Health page, the dashboard, /metrics and the
`clock_skew` alert rule read.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from core.identity import process_id

KEY = "fleet:clock"  # process id -> {"kind", "host", "pid", "offset", "at"} (JSON; `at` in fleet time)
MAX_OFFSET = 1.0  # seconds a process's clock may be off the fleet's before it is warned about
MEASURE_EVERY = 10.0  # seconds between the measures of a process that measures when asked (the web)
STALE = 120.0  # a record older than this is a process gone: readers drop it
WARN_EVERY = 60.0  # seconds between two warnings of one process about its clock

log = logging.getLogger("fleet.clock")


@dataclass(frozen=True)
class ProcessClock:
    """A process's last measured offset, as `fleet:clock` keeps it."""

    id: str
    kind: str  # worker | scheduler | web
    host: str
    offset: float  # seconds this process's clock is ahead of the fleet's (negative: behind)
    age: float  # seconds since it was measured

    @property
    def skewed(self) -> bool:
        return abs(self.offset) > MAX_OFFSET

    @property
    def described(self) -> str:
        return describe(self.offset)


def describe(offset: float) -> str:
    """`20.3 s ahead`, `0.4 s behind`."""
    return f"{abs(offset):.1f} s {'ahead' if offset >= 0 else 'behind'}"


def versus_fleet(offset: float) -> str:
    """`20.3 s ahead of the fleet's (Redis TIME)`, `0.4 s behind the fleet's (Redis TIME)`."""
    return f"{describe(offset)}{' of' if offset >= 0 else ''} the fleet's (Redis TIME)"


class Clock:
    """This process's offset from the fleet's clock (0 until measured)."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.measured_at: float | None = None  # monotonic
        self._warned_at = -WARN_EVERY

    def measure(self, client, kind: str) -> float:
        """Read Redis `TIME` between two readings of this process's clock; record the offset in
        `fleet:clock` and warn when it is over MAX_OFFSET."""
        before = time.time()
        seconds, micros = client.time()
        after = time.time()
        self.offset = (before + after) / 2 - (seconds + micros / 1e6)
        self.measured_at = now = time.monotonic()
        if abs(self.offset) > MAX_OFFSET and now - self._warned_at >= WARN_EVERY:
            self._warned_at = now
            log.warning("this process's clock is %s; Fleet goes by the fleet's, but fix this host's time "
                        "sync (NTP, chrony)", versus_fleet(self.offset),
                        extra={"clock_offset": round(self.offset, 3), "clock_of": process_id()})
        record = {"kind": kind, "host": socket.gethostname(), "pid": os.getpid(),
                  "offset": round(self.offset, 4), "at": seconds + micros / 1e6}
        client.hset(KEY, process_id(), json.dumps(record))
        return self.offset

    def forget(self, client) -> None:
        """This process's record goes, as its worker or scheduler stops (a part that runs on in the
        same process, the web, records it again at its next measure)."""
        client.hdel(KEY, process_id())
        self.measured_at = None

    def keep_measured(self, client, kind: str) -> float:
        """Measure unless this process did so in the last MEASURE_EVERY seconds."""
        if self.measured_at is None or time.monotonic() - self.measured_at >= MEASURE_EVERY:
            return self.measure(client, kind)
        return self.offset


CLOCK = Clock()  # this process's


def fleet_time() -> float:
    """Unix time by the fleet's clock, as this process last measured it."""
    return time.time() - CLOCK.offset


def fleet_datetime() -> datetime:
    """Now by the fleet's clock (aware, UTC)."""
    return datetime.fromtimestamp(fleet_time(), timezone.utc)


def fleet_utcnow() -> datetime:
    """Now by the fleet's clock, naive UTC as the database keeps times."""
    return fleet_datetime().replace(tzinfo=None)


def process_clocks(client) -> list[ProcessClock]:
    """Every process's last offset, the furthest off first; forgets the records of processes
    gone (older than STALE)."""
    with client.pipeline(transaction=False) as pipe:
        pipe.time()
        pipe.hgetall(KEY)
        (seconds, micros), raw = pipe.execute()
    now = seconds + micros / 1e6
    found, gone = [], []
    for key, value in raw.items():
        try:
            record = json.loads(value)
            age = now - float(record["at"])
            clock = ProcessClock(key.decode(errors="replace"), str(record["kind"]), str(record["host"]),
                                 float(record["offset"]), max(0.0, age))
        except (ValueError, KeyError, TypeError):
            gone.append(key)
            continue
        if age > STALE:
            gone.append(key)
        else:
            found.append(clock)
    if gone:
        client.hdel(KEY, *gone)
    return sorted(found, key=lambda c: (-abs(c.offset), c.id))
