"""Fencing: each delivery of a message has one owner, and a copy whose ownership moved stops.

When a worker thread starts a message it takes the message's delivery in the state Redis
(`fleet:__owners__`, a hash: delivery key → `<run id> <process id>`; the run id is the
attempt's JobLog `run_id`). A message redelivered after its worker was lost (killed, hung,
SIGSTOPped, cut off by a partition) is taken by the worker that runs it again, so the old
copy, if its process comes back, finds the delivery owned by another attempt: it is *stale*.
A stale copy raises `StaleDelivery` at its next check (between the steps of a job, before
every paid provider call) and is settled as `abandoned`: no retry, no dead letter, no
success, no ack of the new copy's message (see actors/middleware/fencing.py).

On the Redis broker (when it is also the state Redis) a copy is also stale as soon as its
message left the worker's ack set: Dramatiq's maintenance moved it back to its queue because
the worker's heartbeat stopped. So a copy fetched before a hang and started after it never
runs, and a running one is stale from the redelivery on, even before another worker took it.

The delivery key is the Redis id of the enqueued copy (a retry is a new copy with its own
key) or, on RabbitMQ, the message id.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

from core.broker import OWNERS
from core.identity import process_id
from core.lua import lua
from core.state import state_redis

_CLAIM = lua(__file__, "delivery_claim")
_CHECK = lua(__file__, "delivery_check")
_RELEASE = lua(__file__, "delivery_release")
_current = threading.local()


class StaleDelivery(BaseException):
    """Raised inside a job whose delivery moved to another attempt. A BaseException, as
    Dramatiq's own interrupts are, so an actor's `except Exception` does not swallow it."""

    def __init__(self, owner: str | None):
        super().__init__(f"this copy of the message was redelivered; {f'it is now run by {owner}' if owner else 'it waits to run again'}")
        self.owner = owner or None


@dataclass(frozen=True)
class Delivery:
    key: str
    owner: str  # `<run id> <process id>`
    previous: str | None  # the owner it was taken from: set when the message was redelivered
    acks: str | None = None  # the ack set that holds the copy while it is this worker's (Redis broker)

    @property
    def run_id(self) -> str:
        return self.owner.split(" ", 1)[0]

    @property
    def previous_run_id(self) -> str | None:
        return self.previous.split(" ", 1)[0] if self.previous else None


def delivery_key(message) -> str:
    return message.options.get("redis_message_id") or message.message_id


def run_id_of(owner: str | None) -> str | None:
    return owner.split(" ", 1)[0] if owner else None


def claim(client, message, run_id: str, acks: str | None = None) -> Delivery:
    """Take the message's delivery for this attempt; StaleDelivery if this copy was redelivered
    before it started (it is no longer in `acks`, the worker's ack set)."""
    key = delivery_key(message)
    owner = f"{run_id} {process_id()}"
    found = _CLAIM(client, keys=[OWNERS, acks] if acks else [OWNERS], args=[key, owner])
    if not found[0]:
        raise StaleDelivery(None)
    previous = found[1] if len(found) > 1 else None
    return Delivery(key, owner, previous.decode() if previous else None, acks)


def moved_to(client, delivery: Delivery) -> str | None:
    """None while the delivery is still `delivery`'s; else the owner it moved to ("" when it was
    redelivered and no worker took it yet)."""
    keys = [OWNERS, delivery.acks] if delivery.acks else [OWNERS]
    found = _CHECK(client, keys=keys, args=[delivery.key, delivery.owner])
    return found.decode() if isinstance(found, bytes) else None


def release(client, delivery: Delivery) -> None:
    _RELEASE(client, keys=[OWNERS], args=[delivery.key, delivery.owner])


# -- the delivery the current worker thread runs -------------------------------------------

def enter(delivery: Delivery | None) -> None:
    _current.delivery = delivery


def leave() -> None:
    _current.delivery = None


def check() -> None:
    """Raise StaleDelivery if the job this thread runs was redelivered to another attempt;
    called between the steps of a job and before each paid call. Outside a job: nothing."""
    delivery = getattr(_current, "delivery", None)
    if delivery is None:
        return
    client = state_redis()
    owner = moved_to(client, delivery) if client is not None else None
    if owner is not None:
        raise StaleDelivery(owner)
