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
        """The Message sent, or None when an identical unique job is already queued or running.
        A send that fails (Redis away or out of memory) gives back the unique lock it took."""
        return self.send_message(self.message_with_options(args=args, kwargs=kwargs, **options), delay)

    def send_message(self, message, delay: int | None = None):
        """Send this message as it is, its id kept (the outbox sends a message again under the
        same id); None when an identical unique job is already queued or running."""
        try:
            return self.broker.enqueue(message, delay=delay)
        except DuplicateJob as duplicate:
            log.info("duplicate job not sent", extra={"actor": self.actor_name, "existing_message_id": duplicate.existing_id})
            return None
        except Exception:
            release_unsent(self.broker, [message])
            raise

    def send_many(self, calls: Iterable[tuple], *, chunk: int = SEND_CHUNK, **options) -> tuple[int, int]:
        """Send one message per tuple of arguments in `calls` (any iterable, read a chunk at a
        time, so memory stays flat); returns (sent, skipped as already queued or running).

        Each message goes through the broker's enqueue and every middleware as `send` does;
        on Redis a chunk costs one round trip for its unique locks and one for its enqueues; on
        RabbitMQ one for its locks and one transaction for its messages.
        """
        sent = skipped = 0
        for part in _chunks(calls, chunk):
            claimed = send_messages(self.broker, [self.message_with_options(args=tuple(args), **options) for args in part])
            sent += len(claimed)
            skipped += len(part) - len(claimed)
        return sent, skipped


def _unique(broker) -> UniqueJobs | None:
    return next((m for m in broker.middleware if isinstance(m, UniqueJobs)), None)


def release_unsent(broker, messages: list) -> None:
    """Give back the unique locks these messages took for a send that failed, so no lock is
    left without its message (best effort: a lock that stays is judged stale by the next send)."""
    unique = _unique(broker)
    if unique is None:
        return
    try:
        unique.release_unsent(broker, messages)
    except Exception as exc:  # Redis away: the lock names a message that is nowhere, so it is stale
        log.warning("unique locks of unsent messages not released", extra={"error": str(exc)[:200]})


def send_messages(broker, messages: list, delay: int | list[int | None] | None = None) -> list:
    """Send these messages (of one actor) as they are, ids and all, each after `delay` ms (one
    for all, or a list, one a message); returns those sent, the others being duplicates of a
    unique job queued or running. On Redis a chunk costs one round trip for its unique locks and
    one for its enqueues; when the send fails, the locks it took are given back before the error
    goes on."""
    if not messages:
        return []
    delays = dict(zip((m.message_id for m in messages), delay if isinstance(delay, list) else [delay] * len(messages)))
    actor = broker.get_actor(messages[0].actor_name)
    if not isinstance(broker, (FleetRedisBroker, FleetRabbitmqBroker)):
        return [m for m in messages if actor.send_message(m, delays[m.message_id]) is not None]
    unique = _unique(broker)
    claimed = unique.claim_many(broker, messages) if unique else messages
    try:
        with broker.pipelined():
            for message in claimed:
                broker.enqueue(message, delay=delays[message.message_id])
    except Exception:
        release_unsent(broker, claimed)
        raise
    return claimed


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
