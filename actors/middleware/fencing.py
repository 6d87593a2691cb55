"""Stale copies fenced (see core/fencing.py): a worker thread takes a message's delivery when it
starts it; the copy of a worker that comes back after its message was redelivered finds the
delivery owned by another attempt and is dropped, whatever it was about to do.

`stale(message)` is asked by the retry policy when a job failed (before it decides a retry or
a dead letter) and by `Settlement` when there is anything to settle; a stale copy's outcome is
`abandoned`, its queued steps are dropped, and the consumer neither acks nor dead-letters it
(the new copy's message stays as it is). A success with nothing to settle is checked by the ack
itself (one script: ack only if still the owner, core/lua/delivery_ack.lua), so the common case
costs one round trip for the claim and none more. The delivery is forgotten once its copy is settled.
"""
from __future__ import annotations

import logging
import os

from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware, SkipMessage

from actors.middleware.outcome import Outcome, set_outcome
from core import fencing
from core.settings import get_settings
from core.state import state_redis

log = logging.getLogger("fleet.fencing")


def stale(message, *, strict: bool = False) -> bool:
    """Is this copy's delivery owned by another attempt? Asked of Redis once a copy (the retry
    policy asks when the job ends; settling reuses the answer). Redis away: `strict` raises (the
    settling waits for it), otherwise the copy counts as ours for now and is asked again."""
    known = getattr(message, "fleet_stale", None)
    if known is not None:
        return known
    delivery: fencing.Delivery | None = getattr(message, "fleet_delivery", None)
    client = state_redis()
    if delivery is None or client is None:
        return False
    try:
        owner = fencing.moved_to(client, delivery)
    except Exception:
        if strict:
            raise
        return False
    if owner is None:
        message.fleet_stale = False
        return False
    mark_stale(message, owner)
    return True


def mark_stale(message, owner: str | None) -> None:
    if getattr(message, "fleet_stale", None) is True:
        return
    message.fleet_stale = True
    message.fleet_moved_to = owner
    log.warning("stale copy dropped: the message was redelivered", extra={
        "message_id": message.message_id, "run_id": getattr(message, "fleet_run_id", None), "now_run_by": owner})


def moved_to_run_id(message) -> str | None:
    """The run id of the attempt a stale copy's delivery moved to."""
    return fencing.run_id_of(getattr(message, "fleet_moved_to", None))


def _ack_set(broker, message) -> str | None:
    """The ack set that holds the message while it is this worker's, when the state Redis is the
    broker's (the fencing scripts read both in one step)."""
    if not isinstance(broker, RedisBroker) or get_settings().state_redis_url != get_settings().broker_url:
        return None
    return f"{broker.namespace}:__acks__.{broker.broker_id}.{message.queue_name}"


class DeliveryFencing(Middleware):
    def before_process_message(self, broker, message):
        fencing.leave()
        message.fleet_run_id = os.urandom(8).hex()
        client = state_redis()
        if client is None:
            return
        try:
            delivery = fencing.claim(client, message, message.fleet_run_id, _ack_set(broker, message))
        except fencing.StaleDelivery:
            # fetched before this worker hung, started after: the message went back to its queue meanwhile
            mark_stale(message, None)
            set_outcome(message, Outcome("abandoned"))
            raise SkipMessage("stale copy: the message was redelivered before it started") from None
        message.fleet_delivery = delivery
        fencing.enter(delivery)
        if delivery.previous:
            log.warning("message redelivered: its earlier attempt was abandoned", extra={
                "message_id": message.message_id, "abandoned_run_id": delivery.previous_run_id,
                "abandoned_by": delivery.previous.split(" ", 1)[-1]})

    def after_process_message(self, broker, message, *, result=None, exception=None):
        fencing.leave()

    def after_skip_message(self, broker, message):
        fencing.leave()

    def after_ack(self, broker, message):
        delivery = getattr(message, "fleet_delivery", None)
        if delivery is not None and not delivery.acks:  # with an ack set, Fleet's consumer forgot it as it acked
            self._forget(message, delivery)

    def after_nack(self, broker, message):
        delivery = getattr(message, "fleet_delivery", None)
        if delivery is not None:
            self._forget(message, delivery)

    @staticmethod
    def _forget(message, delivery: fencing.Delivery) -> None:
        if getattr(message, "fleet_stale", False):
            return  # the delivery is the redelivered copy's
        try:
            fencing.release(state_redis(), delivery)
        except Exception as exc:  # an entry left behind is overwritten by a redelivery, or harmless
            log.debug("delivery not forgotten", extra={"error": str(exc)[:200]})
