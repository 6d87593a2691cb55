"""How an attempt ended, as decided by the middleware and read by JobLog and unique locks;
and `option`, how every middleware reads a job option."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dramatiq.errors import ActorNotFound

from core.errors import Classified


@dataclass
class Outcome:
    status: str  # success | failed | retrying | deferred | abandoned (a stale copy, see fencing)
    error: Classified | None = None
    delay_seconds: float | None = None


def set_outcome(message, outcome: Outcome) -> None:
    message.fleet_outcome = outcome


def get_outcome(message) -> Outcome | None:
    return getattr(message, "fleet_outcome", None)


def option(broker, message, name: str, default: Any = None) -> Any:
    """A job option: the message's own (`send_with_options(retry_delays=…)`) over the actor's
    declaration over `default`, as everywhere in Dramatiq."""
    if name in message.options:
        return message.options[name]
    try:
        return broker.get_actor(message.actor_name).options.get(name, default)
    except ActorNotFound:
        return default
