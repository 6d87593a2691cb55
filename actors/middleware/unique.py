"""Unique jobs: at most one message per actor and arguments queued, delayed or running.

A lock (`fleet:unique:<actor>:<hash of the arguments>`) names the message that holds it and
where that message is: `<message id> <queue> <Redis id> <claimed at, ms> <q|r> [<process>]`
(queued, or running in that worker process). Only the message that holds a lock refreshes it (each enqueue of a retry or a
deferral moves it to the new copy) or releases it. A lock whose message is neither queued,
delayed nor running (the copy it names is gone from Redis, e.g. lost in a Redis crash) is
stale, and the next send takes it over; a lock younger than CLAIM_GRACE_MS is never judged
stale, since its message may still be on its way to the queue. Where the queues cannot be
looked into (RabbitMQ), a running message's lock is stale once its worker process is dead
(its presence heartbeat's `fleet:alive:<process>` expired), so a message lost with its worker
does not block its job until the lock's TTL.

A send while the holder is *running* asks for a follow-up: the running job may have read
its input before the sender changed it, so when the holder ends, the job is sent once more.
"""
from __future__ import annotations

import hashlib
import json
import logging

from dramatiq.brokers.redis import RedisBroker
from dramatiq.errors import ActorNotFound
from dramatiq.middleware import Middleware, MiddlewareError

from actors.middleware.outcome import get_outcome
from actors.middleware.settle import later
from core.identity import process_id
from core.lua import lua
from core.settings import get_settings
from core.state import state_redis

log = logging.getLogger("fleet.unique")

LOCK_TTL = 24 * 3600  # a backstop: a lock outlives any sane backlog, and still expires if all else fails
CLAIM_GRACE_MS = 5_000
FOLLOW_UP_OPTIONS = ("trace_id", "retry_delays", "time_limit", "max_defer")

_ALIVE = "unique_alive"  # shared by the scripts, before their own text
_CLAIM = lua(__file__, _ALIVE, "unique_claim")
_LIVE_HOLDERS = lua(__file__, _ALIVE, "unique_live_holders")
_RELEASE = lua(__file__, "unique_release")
_RELEASE_UNSENT = lua(__file__, "unique_release_unsent")


def _introspects(broker) -> bool:
    """Can a lock's message be looked for in the queues? Only when the broker is the state Redis."""
    return isinstance(broker, RedisBroker) and get_settings().state_redis_url == get_settings().broker_url


def live_holders(broker, keys: list[str]) -> list[str | None]:
    """For each lock, the id of the message holding it while that message is queued, delayed or
    running; None for a free or stale lock (the next send takes it over). One round trip."""
    client = state_redis()
    if client is None or not keys:
        return [None] * len(keys)
    found = _LIVE_HOLDERS(client, keys=keys, args=[getattr(broker, "namespace", ""),
                                                   "1" if _introspects(broker) else "0", CLAIM_GRACE_MS])
    return [holder.decode() if holder else None for holder in found]


class DuplicateJob(MiddlewareError):
    def __init__(self, key: str, existing_id: str | None):
        super().__init__(f"an identical job is already queued or running ({existing_id})")
        self.key = key
        self.existing_id = existing_id


def unique_key(actor_name: str, args, kwargs) -> str:
    payload = json.dumps([args, kwargs], sort_keys=True, default=str)
    return f"fleet:unique:{actor_name}:{hashlib.sha1(payload.encode()).hexdigest()}"


def holder_of(value: bytes | str | None) -> str | None:
    """The message id a lock value names."""
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else value
    return text.split(" ", 1)[0]


class UniqueJobs(Middleware):
    """Actors declared `unique=True` (or messages sent with `unique=True`) have at most one
    message per arguments queued, delayed or running; see the module's docstring."""

    @property
    def actor_options(self):
        return {"unique"}

    def _is_unique(self, broker, message) -> bool:
        if "unique" in message.options:
            return bool(message.options["unique"])
        try:
            return bool(broker.get_actor(message.actor_name).options.get("unique"))
        except ActorNotFound:
            return False

    def _claim_args(self, broker, message, state: str) -> list:
        namespace = getattr(broker, "namespace", "")
        return [message.message_id, message.queue_name, message.options.get("redis_message_id", "*"), state,
                LOCK_TTL, namespace, "1" if _introspects(broker) else "0", CLAIM_GRACE_MS,
                process_id() if state == "r" else ""]

    def claim(self, broker, message, state: str = "q", client=None):
        """Take or refresh the message's lock; the holder's lock value when another message holds it."""
        key = message.options["unique_key"]
        return _CLAIM(client or state_redis(), keys=[key, key + ":again"],
                      args=self._claim_args(broker, message, state))

    def claim_many(self, broker, messages: list) -> list:
        """The messages whose locks this call took, in one round trip; the others are duplicates.
        Their enqueue then names the queued copy in the lock (`unique_claimed`)."""
        client = state_redis()
        if client is None or not messages or not self._is_unique(broker, messages[0]):
            return messages
        for message in messages:
            message.options["unique_key"] = unique_key(message.actor_name, message.args, message.kwargs)
        with client.pipeline(transaction=False) as pipe:
            for message in messages:
                self.claim(broker, message, client=pipe)
            holders = pipe.execute(raise_on_error=False)
        failed = next((h for h in holders if isinstance(h, Exception)), None)
        if failed is not None:  # Redis refused some claims (out of memory): give back those it took
            self.release_unsent(broker, [m for m, h in zip(messages, holders) if h is None])
            raise failed
        claimed = []
        for message, holder in zip(messages, holders):
            if holder is None:
                message.options["unique_claimed"] = True
                claimed.append(message)
        return claimed

    def release_unsent(self, broker, messages: list) -> None:
        """Give back the locks these messages took for a send that did not get through, one round
        trip; a lock another message holds, or whose message did reach its queue, is left alone."""
        keyed = [m for m in messages if self._is_unique(broker, m)]
        client = state_redis()
        if client is None or not keyed:
            return
        with client.pipeline(transaction=False) as pipe:
            for message in keyed:
                key = unique_key(message.actor_name, message.args, message.kwargs)
                _RELEASE_UNSENT(pipe, keys=[key, key + ":again"], args=[message.message_id, getattr(broker, "namespace", "")])
            pipe.execute()
        for message in keyed:
            message.options.pop("unique_key", None)
            message.options.pop("unique_claimed", None)

    def before_enqueue(self, broker, message, delay):
        claimed = message.options.pop("unique_claimed", False)
        if not self._is_unique(broker, message):
            return
        if state_redis() is None:
            return
        first_send = "unique_key" not in message.options
        message.options.setdefault("unique_key", unique_key(message.actor_name, message.args, message.kwargs))
        pipe = getattr(broker, "current_pipeline", lambda: None)()
        if claimed and pipe is not None:
            if _introspects(broker):
                self.claim(broker, message, client=pipe)  # names the queued copy, in the enqueue's round trip
            return  # (elsewhere claim_many's lock names the message already: there is no queued copy to name)
        holder = self.claim(broker, message)
        if holder is None:
            return
        if first_send:
            raise DuplicateJob(message.options["unique_key"], holder_of(holder))
        # A retry, deferral or delayed copy whose lock another message took over (after its own
        # copy was lost): it goes on, leaving the lock alone; raising here would stop a consumer.
        log.warning("message re-enqueued without its unique lock", extra={"holder": holder_of(holder)})

    def before_process_message(self, broker, message):
        if message.options.get("unique_key") and state_redis() is not None:
            holder = self.claim(broker, message, state="r")
            if holder is not None:
                log.warning("unique job runs while another message holds its lock",
                            extra={"holder": holder_of(holder)})

    def after_process_message(self, broker, message, *, result=None, exception=None):
        outcome = get_outcome(message)
        if outcome and outcome.status in ("retrying", "deferred", "abandoned"):
            return  # the lock moves to the next copy (an abandoned copy's lock is its redelivery's)
        key = message.options.get("unique_key")
        if key and state_redis() is not None:
            later(message, "release unique lock", lambda: self._release_and_follow_up(broker, message, key))

    def after_skip_message(self, broker, message):
        self.after_process_message(broker, message)

    def _release_and_follow_up(self, broker, message, key: str) -> None:
        if not _RELEASE(state_redis(), keys=[key, key + ":again"], args=[message.message_id]):
            return
        # The flag is gone with the lock now: the follow-up must be sent even if this step runs again.
        later(message, "send follow-up job", lambda: self._follow_up(broker, message))

    @staticmethod
    def _follow_up(broker, message) -> None:
        options = {k: v for k, v in message.options.items() if k in FOLLOW_UP_OPTIONS}
        sent = broker.get_actor(message.actor_name).send_with_options(args=message.args, kwargs=message.kwargs, **options)
        log.info("follow-up job sent: its input changed while it ran",
                 extra={"follow_up_message_id": getattr(sent, "message_id", None)})


def release_lock(message) -> None:
    """Free the unique lock of a message that will never run (a cancelled one), with no follow-up."""
    key = message.options.get("unique_key")
    client = state_redis()
    if key and client is not None:
        _RELEASE(client, keys=[key, key + ":again"], args=[message.message_id])
