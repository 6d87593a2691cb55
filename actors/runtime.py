"""The job runtime a domain declares its actors with: `boot` and `fleet_actor`.

    @fleet_actor(queue_name="workouts", service="openai", unique=True, on_give_up=mark_failed)
    def generate(plan_id): ...

`service` defers jobs while that service's breaker is open, `unique` makes a second send
of the same arguments a no-op (send returns None), `retry_delays` overrides
FLEET_RETRY_DELAYS, `on_give_up(message, error)` runs when the job fails for good.
"""
from __future__ import annotations

import logging

import dramatiq

from actors.middleware import fleet_middleware
from actors.middleware.unique import DuplicateJob
from core import boot as core_boot
from core.settings import Settings

log = logging.getLogger("fleet.actors")


def boot(settings: Settings | None = None) -> Settings:
    """Settings, logging, database, and the broker with all of Fleet's middleware; what every
    entry point calls before its work (once a process)."""
    return core_boot.boot(settings, middleware=fleet_middleware)


class FleetActor(dramatiq.Actor):
    def send_with_options(self, *, args=(), kwargs=None, delay=None, **options):
        """The Message sent, or None when an identical unique job is already queued or running."""
        try:
            return super().send_with_options(args=args, kwargs=kwargs, delay=delay, **options)
        except DuplicateJob as duplicate:
            log.info("duplicate job not sent", extra={"actor": self.actor_name, "existing_message_id": duplicate.existing_id})
            return None


def fleet_actor(fn=None, **options):
    """Declare an actor on Fleet's broker (booting Fleet first, so any module may import actors)."""
    boot()
    return dramatiq.actor(fn, actor_class=FleetActor, **options)
