"""How an attempt ended, as decided by the middleware and read by JobLog and unique locks."""
from __future__ import annotations

from dataclasses import dataclass

from core.errors import Classified


@dataclass
class Outcome:
    status: str  # success | failed | retrying | deferred
    error: Classified | None = None
    delay_seconds: float | None = None


def set_outcome(message, outcome: Outcome) -> None:
    message.fleet_outcome = outcome


def get_outcome(message) -> Outcome | None:
    return getattr(message, "fleet_outcome", None)
