"""Builds the Dramatiq broker named by BROKER_URL and checks that it answers."""
from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time

import dramatiq
import pika
import redis
from dramatiq import Message
from dramatiq.broker import MessageProxy
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff
from dramatiq.errors import ConnectionClosed, DecodeError
from dramatiq.middleware import Middleware, MiddlewareError

from core.errors import FleetError
from core.lua import lua
from core.settings import Settings
from core.urls import redact_url

REDIS_NAMESPACE = "fleet"
CONNECT_TIMEOUT = 5.0


class BrokerUnavailable(FleetError):
    pass


# A dead worker's unacked messages are found by a maintenance pass that runs on a share of
# fetches (FLEET_DEAD_WORKER_CHECKS, 10 % by default); Dramatiq's 0.1 % would leave them for
# many minutes. Dramatiq counts the share out of this.
MAINTENANCE_SCALE = 1_000_000
WAKE_TOKENS = 8  # wake-up tokens a queue keeps for its idle consumers
INVALID_ACTOR = "<invalid message>"  # the actor of the stand-in for a message that cannot be decoded
RAW_LIMIT = 4_000  # bytes of an invalid message kept


_fetching = threading.Event()  # cleared while this process must not fetch (the database or Redis away)
_fetching.set()


def pause_fetching(paused: bool = True) -> None:
    """Stop (or, with False, restart) every Redis consumer of this process from fetching: a
    consumer then hands out nothing, not even what it prefetched (its close gives that back)."""
    if paused:
        _fetching.clear()
    else:
        _fetching.set()


def _wake_key(namespace: str, queue_name: str) -> str:
    return f"{namespace}:{queue_name}.wake"


DISPATCH = lua(__file__, "dispatch")  # Dramatiq's dispatch script, redelivering to the front
ACK_OWNED = lua(__file__, "delivery_ack")
OWNERS = f"{REDIS_NAMESPACE}:__owners__"  # delivery key -> owner of a message being worked (core/fencing.py)


class FleetRedisBroker(RedisBroker):
    """Dramatiq's Redis broker with these changes:

    - its dispatch script is Fleet's copy of Dramatiq's (core/lua/dispatch.lua): messages a dead
      worker held, and messages given back, go to the front of their queue, not behind the
      backlog; `beat()` keeps the worker's heartbeat there fresh while all its threads are busy
      (Dramatiq beats only when it fetches, so a worker busy past the heartbeat timeout with a full
      prefetch counted as dead);

    - enqueues can be gathered into one pipeline per batch: inside `with broker.pipelined():`
      a thread's enqueues still run every middleware hook, but their Redis writes are queued
      on a pipeline sent in one round trip when the block ends; other threads are not affected;
    - every enqueue also pushes a wake-up token for the queue, on which idle consumers block
      (see `FleetRedisConsumer`);
    - its consumers are `FleetRedisConsumer`s;
    - a signal calls only the middleware that implement its hook (Dramatiq calls every
      middleware's no-op too: four signals a message times sixteen middleware).
    """

    def __init__(self, **kwargs):
        self._hooks: dict[str, list] = {}  # signal -> the hooks that do something, in middleware order
        super().__init__(**kwargs)
        self.scripts["dispatch"] = self.client.register_script(DISPATCH.source)
        self._local = threading.local()

    def beat(self) -> None:
        """This worker's heartbeat in Dramatiq's heartbeat set, as every dispatch call writes it."""
        self.client.zadd(f"{self.namespace}:__heartbeats__", {self.broker_id: int(time.time() * 1000)})

    def add_middleware(self, middleware, **kwargs) -> None:
        super().add_middleware(middleware, **kwargs)
        self._hooks = {}

    def remove_middleware(self, middleware) -> None:
        """Take a middleware off (an in-process Worker's own, once that worker has stopped)."""
        self.middleware.remove(middleware)
        self._hooks = {}

    def _hooks_of(self, signal: str) -> list:
        hooks = self._hooks.get(signal)
        if hooks is None:
            noop = getattr(Middleware, signal, None)
            hooks = self._hooks[signal] = [getattr(m, signal) for m in self.middleware
                                           if getattr(getattr(m, signal), "__func__", None) is not noop]
        return hooks

    def emit_before(self, signal: str, *args, **kwargs) -> None:
        signal = "before_" + signal
        for hook in self._hooks_of(signal):
            try:
                hook(self, *args, **kwargs)
            except MiddlewareError:
                raise
            except Exception:
                self.logger.critical("Unexpected failure in %s of %r.", signal, getattr(hook, "__self__", hook), exc_info=True)

    def emit_after(self, signal: str, *args, **kwargs) -> None:
        signal = "after_" + signal
        for hook in reversed(self._hooks_of(signal)):
            try:
                hook(self, *args, **kwargs)
            except Exception:
                self.logger.critical("Unexpected failure in %s of %r.", signal, getattr(hook, "__self__", hook), exc_info=True)

    @property
    def consumer_class(self):
        return FleetRedisConsumer

    @contextlib.contextmanager
    def pipelined(self):
        pipe = self.client.pipeline(transaction=False)
        self._local.pipe = pipe
        try:
            yield pipe
        finally:
            self._local.pipe = None
        pipe.execute()

    def current_pipeline(self):
        """The pipeline of this thread's `pipelined()` block, if it is in one."""
        return getattr(self._local, "pipe", None)

    def do_enqueue(self, queue_name: str, *args):
        pipe = self.current_pipeline()
        maintenance = "0" if pipe is not None else self._should_do_maintenance("enqueue")
        command = ["enqueue", int(time.time() * 1000), queue_name, self.broker_id, self.heartbeat_timeout,
                   self.dead_message_ttl, maintenance, self._max_unpack_size(), *args]
        if pipe is not None:
            self.scripts["dispatch"](keys=[self.namespace], args=command, client=pipe)
            self._wake(pipe, queue_name)
            return
        # Dramatiq's enqueue script and the wake-up token in one round trip.
        dispatch = self.scripts["dispatch"]
        with self.client.pipeline(transaction=False) as own:
            own.evalsha(dispatch.sha, 1, self.namespace, *command)
            self._wake(own, queue_name)
            try:
                own.execute()
            except redis.exceptions.NoScriptError:  # a restarted Redis forgot the script: load it
                dispatch(keys=[self.namespace], args=command)

    def _wake(self, pipe, queue_name: str):
        key = _wake_key(self.namespace, queue_name)
        return pipe.rpush(key, 1).ltrim(key, -WAKE_TOKENS, -1)


def _as_connection_error(fn):
    """Any Redis error is a connection error to Dramatiq's consumer thread, which then restarts
    its consumer; upstream lets e.g. a failed requeue escape from the thread's error handler,
    and the thread (the delayed queue's consumer, say) dies for good."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except redis.RedisError as exc:
            raise ConnectionClosed(exc) from None

    return wrapped


def _root_cause(error: BaseException) -> str:
    """What Dramatiq's DecodeError wraps (its encoder keeps the cause in `args`, not `__cause__`)."""
    cause = error
    while True:
        inner = next((a for a in cause.args if isinstance(a, BaseException)), None) or cause.__cause__
        if inner is None:
            return f"{type(cause).__name__}: {str(cause)[:120]}"
        cause = inner


class FleetRedisConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer, hardened (each a patch around upstream behaviour):

    - every Redis error is a `ConnectionClosed` (`_as_connection_error`);
    - a message that cannot be decoded is not raised out of the iterator, which stranded the
      messages fetched with it and brought it back after every restart: its stored data is
      cut to RAW_LIMIT bytes and a stand-in for the actor INVALID_ACTOR takes its place,
      which Dramatiq's consumer moves to the dead letters as a message of an unknown actor;
    - an idle consumer blocks on its queue's wake-up list (BLPOP, up to the worker timeout)
      instead of sleeping up to a second between polls, so a message sent to an idle worker
      starts within milliseconds at no more idle cost;
    - closing gives back the messages fetched but not handed out yet;
    - a stale copy (`message.fleet_stale`, set by fencing: the message was redelivered and another
      attempt owns it) is neither acked nor dead-lettered: the stored message is the redelivered
      copy's; only this worker's ack set lets go of it. A copy with a delivery
      (`message.fleet_delivery`) is acked by one script that also checks and forgets its delivery.
    - while `pause_fetching()` holds, it hands out nothing.
    """

    requeue = _as_connection_error(_RedisConsumer.requeue)

    def _acks(self) -> str:
        return f"{self.broker.namespace}:__acks__.{self.broker.broker_id}.{self.queue_name}"

    @_as_connection_error
    def ack(self, message):
        if getattr(message, "fleet_stale", False):
            return self._let_go(message)
        delivery = getattr(message, "fleet_delivery", None)
        if delivery is None or not delivery.acks:
            return _RedisConsumer.ack(self, message)
        try:
            acked = ACK_OWNED(self.broker.client, keys=[self._acks(), f"{self.broker.namespace}:{self.queue_name}.msgs", OWNERS],
                              args=[message.options["redis_message_id"], delivery.key, delivery.owner])
            if not acked:
                message.fleet_stale = True  # redelivered after it was settled: JobLog marks it
        finally:
            self.queued_message_ids.discard(message.message_id)

    @_as_connection_error
    def nack(self, message):
        if getattr(message, "fleet_stale", False):
            return self._let_go(message)
        return _RedisConsumer.nack(self, message)

    def _let_go(self, message) -> None:
        try:
            self.broker.client.srem(self._acks(), message.options["redis_message_id"])
        finally:
            self.queued_message_ids.discard(message.message_id)

    @_as_connection_error
    def __next__(self):
        while True:
            if not _fetching.is_set():
                return None  # paused: its consumer thread, paused too, stops at this None
            if self.message_cache:
                data = self.message_cache.pop(0)
                if data is None:
                    continue  # its body was gone from Redis (upstream warns the same way)
                self.misses = 0
                try:
                    message = Message.decode(data)
                except DecodeError as exc:
                    message = self._stand_in(data, exc)
                    if message is None:
                        continue
                self.queued_message_ids.add(message.message_id)
                return MessageProxy(message)
            room = self.prefetch - self.outstanding_message_count
            if room > 0:
                self.message_cache = self.broker.do_fetch(self.queue_name, room)
                if self.message_cache:
                    continue
                # Block until an enqueue wakes us, at most as long as upstream would sleep.
                self.broker.client.blpop([_wake_key(self.broker.namespace, self.queue_name)],
                                         max(0.01, self.timeout / 1000))
                return None
            self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
            time.sleep(backoff_ms / 1000)
            return None

    def _stand_in(self, data: bytes, error: DecodeError) -> Message | None:
        """The stand-in for an undecodable message, or None if it is no longer ours."""
        acks = f"{self.broker.namespace}:__acks__.{self.broker.broker_id}.{self.queue_name}"
        bodies = f"{self.broker.namespace}:{self.queue_name}.msgs"
        ids = list(self.broker.client.smembers(acks))
        stored = self.broker.client.hmget(bodies, ids) if ids else []
        redis_id = next((rid.decode() for rid, body in zip(ids, stored) if body == data), None)
        if redis_id is None:
            return None
        self.broker.client.hset(bodies, redis_id, data[:RAW_LIMIT])
        reason = f"not a valid message ({_root_cause(error)}); it starts {data[:80]!r}"
        logging.getLogger("fleet.broker").error("message that cannot be decoded set aside", extra={
            "queue": self.queue_name, "redis_message_id": redis_id, "error": reason})
        return Message(queue_name=self.queue_name, actor_name=INVALID_ACTOR, args=(), kwargs={},
                       options={"redis_message_id": redis_id, "invalid_reason": reason}, message_id=redis_id)

    def close(self):
        ids = []
        for data in self.message_cache:
            try:
                ids.append(Message.decode(data).options["redis_message_id"])
            except (DecodeError, KeyError, TypeError):
                pass
        self.message_cache = []
        if ids:
            try:
                self.broker.do_requeue(self.queue_name, *ids)
            except redis.RedisError:
                pass  # Redis is away: HeldMessages gives them back once it is here again


class FleetRabbitmqBroker(RabbitmqBroker):
    """Dramatiq's RabbitMQ broker, whose enqueues can be gathered into batches: inside
    `with broker.pipelined():` a thread publishes on a channel of its own in transaction mode,
    without waiting for the broker after each message, and the block's end commits them in one
    round trip (Dramatiq's publisher confirms wait for each message). Should the connection
    fail inside the block, the messages published there and not committed are published again,
    one by one, with confirms: at least once, as any enqueue."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._batch = threading.local()

    @contextlib.contextmanager
    def pipelined(self):
        if getattr(self._batch, "channel", None) is not None:
            yield self._batch.channel  # nested: the outer block commits
            return
        channel = self.connection.channel()
        channel.tx_select()
        previous = getattr(self.state, "channel", None)
        self.state.channel = channel
        self.channels.add(channel)
        self._batch.channel, self._batch.sent = channel, []
        unsent: list = []
        try:
            yield channel
            channel.tx_commit()
        except (pika.exceptions.AMQPError, ConnectionClosed):
            unsent = self._batch.sent
            logging.getLogger("fleet.broker").warning("batch of messages not committed; sending them one by one",
                                                      extra={"messages": len(unsent)})
        finally:
            self._batch.channel, self._batch.sent = None, []
            if getattr(self.state, "channel", None) is channel:  # not replaced after a failure
                if previous is not None:
                    self.state.channel = previous
                else:
                    del self.state.channel
            self.channels.discard(channel)
            if channel.is_open:
                with contextlib.suppress(Exception):
                    channel.close()
        for message, delay in unsent:
            super().enqueue(message, delay=delay)

    def current_pipeline(self):
        return getattr(self._batch, "channel", None)

    def enqueue(self, message: Message, *, delay: int | None = None) -> Message:
        sent = super().enqueue(message, delay=delay)
        batch = getattr(self._batch, "channel", None)
        if batch is not None and getattr(self.state, "channel", None) is batch:
            self._batch.sent.append((message, delay))
        return sent


def redis_client(url: str, timeout: float = CONNECT_TIMEOUT) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_connect_timeout=timeout, socket_timeout=timeout + 5, health_check_interval=30
    )


def build_broker(settings: Settings, middleware: list) -> dramatiq.Broker:
    """The broker of BROKER_URL with exactly `middleware` (boot hands in Fleet's)."""
    if settings.is_rabbitmq:
        return FleetRabbitmqBroker(url=settings.broker_url, middleware=middleware, confirm_delivery=True)
    return FleetRedisBroker(
        client=redis_client(settings.broker_url),
        middleware=middleware,
        namespace=REDIS_NAMESPACE,
        heartbeat_timeout=int(settings.heartbeat_timeout * 1000),
        maintenance_chance=int(settings.dead_worker_checks * MAINTENANCE_SCALE),
    )


def _ping(url: str, timeout: float) -> None:
    if url.startswith(("amqp://", "amqps://")):
        params = pika.URLParameters(url)
        params.socket_timeout = timeout
        params.connection_attempts = 1
        params.blocked_connection_timeout = timeout
        pika.BlockingConnection(params).close()
    else:
        client = redis_client(url, timeout)
        try:
            client.ping()
        finally:
            client.close()


def check_broker(settings: Settings, wait: float = CONNECT_TIMEOUT) -> None:
    """Raise BrokerUnavailable unless the broker answers within `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        try:
            _ping(settings.broker_url, timeout=max(0.5, min(2.0, deadline - time.monotonic())))
            return
        except (redis.RedisError, pika.exceptions.AMQPError, OSError) as exc:
            if time.monotonic() >= deadline:
                hint = " (is `fleet redis` running?)" if settings.embedded_broker else ""
                reason = str(exc) or type(exc).__name__
                raise BrokerUnavailable(
                    f"broker unreachable at {redact_url(settings.broker_url)}: {reason}{hint}"
                ) from None
            time.sleep(0.2)
