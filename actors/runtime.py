"""The job runtime a domain declares its actors with: `boot` and `fleet_actor`.

    @fleet_actor(queue_name="workouts", service="openai", unique=True, on_give_up=mark_failed)
    def generate(plan_id): ...

`service` defers jobs while that service's breaker is open, `unique` makes a second send
of the same arguments a no-op (send returns None), `retry_delays` overrides
FLEET_RETRY_DELAYS, `max_defer` FLEET_MAX_DEFER, `on_give_up(message, error)` runs when the
job fails for good (`attempt_started_at(message)` says when its last attempt began). A
message's own options (`actor.send_with_options(..., retry_delays=(5,))`) override the actor's.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from itertools import islice

import dramatiq

from actors.middleware import fleet_middleware
from actors.middleware.retries import attempt_started_at  # noqa: F401  (for on_give_up hooks)
from actors.middleware.unique import DuplicateJob, UniqueJobs
from core import boot as core_boot
from core.broker import FleetRabbitmqBroker, FleetRedisBroker
from core.settings import Settings

log = logging.getLogger("fleet.actors")

SEND_CHUNK = 1_000  # messages a round trip in send_many


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

    def send_many(self, calls: Iterable[tuple], *, chunk: int = SEND_CHUNK, **options) -> tuple[int, int]:
        """Send one message per tuple of arguments in `calls` (any iterable, read a chunk at a
        time, so memory stays flat); returns (sent, skipped as already queued or running).

        Each message goes through the broker's enqueue and every middleware as `send` does;
        on Redis a chunk costs one round trip for its unique locks and one for its enqueues; on
        RabbitMQ one for its locks and one transaction for its messages.
        """
        sent = skipped = 0
        for part in _chunks(calls, chunk):
            messages = [self.message_with_options(args=tuple(args), **options) for args in part]
            if not isinstance(self.broker, (FleetRedisBroker, FleetRabbitmqBroker)):
                results = [self.send_with_options(args=m.args, **options) for m in messages]
                sent += sum(r is not None for r in results)
                skipped += sum(r is None for r in results)
                continue
            claimed = self._unique.claim_many(self.broker, messages) if self._unique else messages
            with self.broker.pipelined():
                for message in claimed:
                    self.broker.enqueue(message)
            sent += len(claimed)
            skipped += len(messages) - len(claimed)
        return sent, skipped

    @property
    def _unique(self) -> UniqueJobs | None:
        return next((m for m in self.broker.middleware if isinstance(m, UniqueJobs)), None)


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while part := list(islice(iterator, size)):
        yield part


def fleet_actor(fn=None, **options):
    """Declare an actor on Fleet's broker (booting Fleet first, so any module may import actors)."""
    boot()
    return dramatiq.actor(fn, actor_class=FleetActor, **options)


# Tasks the scheduler (and `fleet schedule run`) emits by name, e.g. "workouts.rescue-stale";
# a domain registers its own, and `actors.all` imports every domain, so the list is complete
# in any process that imported it.
TASKS: dict[str, dramatiq.Actor] = {}


def task(name: str):
    """Register an actor as a schedulable task. Its keyword parameters, with their annotations
    and defaults, are the arguments a schedule entry may give it.

        @task("workouts.rescue-stale")
        @fleet_actor(queue_name="maintenance")
        def rescue_stale_plans(hours: float = 2) -> None: ...
    """

    def register(actor: dramatiq.Actor) -> dramatiq.Actor:
        if name in TASKS and TASKS[name] is not actor:
            raise ValueError(f"task {name!r} is registered twice")
        TASKS[name] = actor
        return actor

    return register
