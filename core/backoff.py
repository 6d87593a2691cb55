"""The one jitter: a wait stretched at random, so jobs that failed or waited together do not all
come back in the same instant."""
from __future__ import annotations

import random


def jittered(seconds: float, *, spread: float, extra: float = 0.0) -> float:
    """`seconds` made up to `spread` (a fraction: 0.05 is 5 %) longer, plus up to `extra` seconds."""
    return seconds * random.uniform(1.0, 1.0 + spread) + (random.uniform(0.0, extra) if extra else 0.0)
