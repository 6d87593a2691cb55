"""Fault injection shared by the simulators: a `--fail` spec, a scripted sequence, counters.

Each API request draws one outcome: the next entry of the scripted `sequence` if any is
left, else a seeded roll against the `fail` probabilities, else "ok".
"""
from __future__ import annotations

import random
import threading
import time
from collections import Counter

FAULTS = ("401", "429", "quota", "500", "502", "503", "timeout", "malformed")
OUTCOMES = ("ok", *FAULTS)
SETTINGS = ("fail", "latency_ms", "retry_after", "hang_seconds", "sequence")
SECONDS_KEPT = 300  # how many seconds of per-second request counts /_control shows


def parse_fail_spec(spec: str) -> dict[str, float]:
    """`"429=0.1,503=0.05"` → `{"429": 0.1, "503": 0.05}`; ValueError naming the bad part."""
    fail: dict[str, float] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        try:
            probability = float(value) if sep else None
        except ValueError:
            probability = None
        if probability is None:
            raise ValueError(f"{part!r} is not FAULT=PROBABILITY")
        fail[name.strip()] = probability
    return check_fail(fail)


def check_fail(fail: dict) -> dict[str, float]:
    if not isinstance(fail, dict):
        raise ValueError("fail must be a mapping of fault to probability")
    for name, probability in fail.items():
        if name not in FAULTS:
            raise ValueError(f"unknown fault {name!r} (known: {', '.join(FAULTS)})")
        if isinstance(probability, bool) or not isinstance(probability, (int, float)) or not 0 <= probability <= 1:
            raise ValueError(f"{name}={probability!r}: the probability must be between 0 and 1")
    if sum(fail.values()) > 1:
        raise ValueError("the fault probabilities add up to more than 1")
    return {name: float(p) for name, p in fail.items()}


def _non_negative(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{name} must be a number >= 0")
    return value


class FaultState:
    """Thread-safe fault configuration and counters of one simulator."""

    def __init__(self, *, fail: dict | None = None, latency_ms: float = 0, retry_after: float = 1,
                 hang_seconds: float = 30, seed: int | None = None):
        self._lock = threading.Lock()
        self._initial = dict(fail=check_fail(fail or {}), latency_ms=latency_ms, retry_after=retry_after,
                             hang_seconds=hang_seconds, sequence=[])
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.config = dict(self._initial, fail=dict(self._initial["fail"]), sequence=[])
            self.counters: Counter[str] = Counter()
            self.by_outcome: Counter[str] = Counter()
            self.per_second: Counter[int] = Counter()  # API requests by arrival second (Unix time)
            self._random = random.Random(self.seed)

    def update(self, changes: dict) -> None:
        """Apply the fault settings in `changes` (all validated before any is applied)."""
        checked = {}
        for name, value in changes.items():
            if name == "fail":
                checked[name] = check_fail(value)
            elif name == "sequence":
                if not isinstance(value, list) or any(o not in OUTCOMES for o in value):
                    raise ValueError(f"sequence must be a list of outcomes ({', '.join(OUTCOMES)})")
                checked[name] = list(value)
            elif name in SETTINGS:
                checked[name] = _non_negative(name, value)
            else:
                raise ValueError(f"unknown setting {name!r}")
        with self._lock:
            self.config.update(checked)

    def draw(self) -> str:
        """The outcome of the next request."""
        with self._lock:
            if self.config["sequence"]:
                return self.config["sequence"].pop(0)
            roll = self._random.random()
            for name, probability in self.config["fail"].items():
                if roll < probability:
                    return name
                roll -= probability
            return "ok"

    def arrive(self) -> None:
        """Count an API request as it comes in (before any latency or hang), in all and in its second."""
        second = int(time.time())
        with self._lock:
            self.counters["requests"] += 1
            self.per_second[second] += 1
            if len(self.per_second) > SECONDS_KEPT:
                for old in [s for s in self.per_second if s <= second - SECONDS_KEPT]:
                    del self.per_second[old]

    def record(self, outcome: str) -> None:
        """What the request came to: a fault name, "ok", or a status like "401"."""
        with self._lock:
            self.by_outcome[outcome] += 1

    def count_event(self, name: str) -> None:
        with self._lock:
            self.counters[name] += 1

    def snapshot(self) -> dict:
        with self._lock:
            config = dict(self.config, fail=dict(self.config["fail"]), sequence=list(self.config["sequence"]))
            per_second = {str(s): n for s, n in sorted(self.per_second.items())}
            return {"config": {**config, "seed": self.seed},
                    "stats": {"requests": 0, **self.counters, "by_outcome": dict(self.by_outcome),
                              "per_second": per_second, "max_per_second": max(self.per_second.values(), default=0)}}
