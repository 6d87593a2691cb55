"""A provider's rate limits as OpenAI enforces them: per API key, a bucket of requests and one of
tokens, each as large as its limit and refilled over a window (a minute; tests shorten it), with
the `x-ratelimit-*` headers every answer carries."""
from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import Counter, deque

ARRIVALS_KEPT = 500_000  # arrival times kept for the busiest-window count
DEFAULT_COMPLETION_TOKENS = 4_096  # what a call without max_completion_tokens is counted for


def duration(seconds: float) -> str:
    """OpenAI's way of writing a reset time: "20ms", "1.5s", "6m0s"."""
    if seconds < 1:
        return f"{max(0, int(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.0f}s" if minutes else f"{rest:.3g}s"


class Bucket:
    """A provider's bucket: `limit` units, refilled over `window` seconds."""

    def __init__(self, limit: int, window: float):
        self.limit, self.window = limit, window
        self.level = float(limit)
        self.at = time.monotonic()

    def refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.limit, self.level + (now - self.at) * self.limit / self.window)
        self.at = now

    def wait_for(self, units: float) -> float:
        """Seconds until `units` are in the bucket (0 when they are)."""
        units = min(units, self.limit)
        return 0.0 if self.level >= units else (units - self.level) * self.window / self.limit

    def reset_seconds(self) -> float:
        return (self.limit - self.level) * self.window / self.limit


class RateLimits:
    """Buckets of requests and tokens per API key; 0 = no limit."""

    def __init__(self, rpm: int = 0, tpm: int = 0, window: float = 60):
        self.lock = threading.Lock()
        self.configure(rpm=rpm, tpm=tpm, window=window)

    def configure(self, *, rpm=None, tpm=None, window=None) -> None:
        for name, value in (("rpm", rpm), ("tpm", tpm), ("window", window)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
                                      or (name == "window" and value <= 0)):
                raise ValueError(f"{name} must be a number > 0" if name == "window" else f"{name} must be >= 0")
        with self.lock:
            self.rpm = int(rpm) if rpm is not None else getattr(self, "rpm", 0)
            self.tpm = int(tpm) if tpm is not None else getattr(self, "tpm", 0)
            self.window = float(window) if window is not None else getattr(self, "window", 60.0)
            self.buckets: dict[str, tuple[Bucket | None, Bucket | None]] = {}
            self.arrivals: deque[float] = deque(maxlen=ARRIVALS_KEPT)
            self.limited = Counter()

    def arrive(self) -> None:
        with self.lock:
            self.arrivals.append(time.monotonic())

    def _buckets(self, key: str) -> tuple[Bucket | None, Bucket | None]:
        if key not in self.buckets:
            self.buckets[key] = (Bucket(self.rpm, self.window) if self.rpm else None,
                                 Bucket(self.tpm, self.window) if self.tpm else None)
        return self.buckets[key]

    def admit(self, key: str, tokens_needed: int) -> tuple[str | None, float, dict]:
        """(None, 0, headers) when the call may go, else (the limit hit, seconds to wait, headers)."""
        with self.lock:
            requests, tokens = self._buckets(key)
            for bucket in (requests, tokens):
                if bucket:
                    bucket.refill()
            hit, wait = None, 0.0
            if requests and requests.wait_for(1):
                hit, wait = "requests", requests.wait_for(1)
            elif tokens and tokens.wait_for(tokens_needed):
                hit, wait = "tokens", tokens.wait_for(tokens_needed)
            if hit:
                self.limited[hit] += 1
            elif requests:
                requests.level -= 1
            return hit, wait, self._headers(requests, tokens)

    def charge(self, key: str, tokens_used: int) -> dict:
        with self.lock:
            requests, tokens = self._buckets(key)
            if tokens:
                tokens.refill()
                tokens.level -= tokens_used
            return self._headers(requests, tokens)

    @staticmethod
    def _headers(requests: Bucket | None, tokens: Bucket | None) -> dict:
        headers = {}
        for name, bucket in (("requests", requests), ("tokens", tokens)):
            if bucket:
                headers[f"x-ratelimit-limit-{name}"] = str(bucket.limit)
                headers[f"x-ratelimit-remaining-{name}"] = str(max(0, int(bucket.level)))
                headers[f"x-ratelimit-reset-{name}"] = duration(bucket.reset_seconds())
        return headers

    def describe(self) -> dict:
        with self.lock:
            times = list(self.arrivals)
            busiest = 0
            for i, t in enumerate(times):  # arrivals in [t, t + window)
                busiest = max(busiest, bisect_left(times, t + self.window, lo=i) - i)
            return {"rpm": self.rpm, "tpm": self.tpm, "window": self.window, "busiest_window": busiest,
                    "limited": dict(self.limited)}
