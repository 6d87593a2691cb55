"""Builds the Dramatiq broker named by BROKER_URL and checks that it answers."""
from __future__ import annotations

import contextlib
import threading
import time

import dramatiq
import pika
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import Middleware, MiddlewareError

from core.errors import FleetError
from core.settings import Settings
from core.urls import redact_url

REDIS_NAMESPACE = "fleet"
CONNECT_TIMEOUT = 5.0


class BrokerUnavailable(FleetError):
    pass


# A dead worker's unacked messages are found by a maintenance pass that runs on this
# share of fetches (out of 1,000,000); Dramatiq's 0.1 % would leave them for many minutes.
MAINTENANCE_CHANCE = 100_000


class FleetRedisBroker(RedisBroker):
    """Dramatiq's Redis broker, whose enqueues can be gathered into one pipeline per batch.

    Inside `with broker.pipelined():` a thread's enqueues still run every middleware hook,
    but their Redis write (Dramatiq's dispatch script) is queued on a pipeline that is sent
    in one round trip when the block ends; other threads are not affected.
    """

    def __init__(self, **kwargs):
        self._hooks: dict = {}
        super().__init__(**kwargs)
        self._local = threading.local()

    @contextlib.contextmanager
    def pipelined(self):
        pipe = self.client.pipeline(transaction=False)
        self._local.pipe = pipe
        try:
            yield pipe
        finally:
            self._local.pipe = None
        pipe.execute()

    # -- hooks: only the middleware that implement one --------------------------------------
    # Dramatiq calls every middleware's hook for every message, most of them Middleware's own
    # no-ops; skipping those is a fifth of what a bulk send costs. Same order, same errors.
    def emit_before(self, signal: str, *args, **kwargs) -> None:
        signal = "before_" + signal
        for middleware in self._hooked(signal):
            try:
                getattr(middleware, signal)(self, *args, **kwargs)
            except MiddlewareError:
                raise
            except Exception:
                self.logger.critical("Unexpected failure in %s of %r.", signal, middleware, exc_info=True)

    def emit_after(self, signal: str, *args, **kwargs) -> None:
        signal = "after_" + signal
        for middleware in reversed(self._hooked(signal)):
            try:
                getattr(middleware, signal)(self, *args, **kwargs)
            except Exception:
                self.logger.critical("Unexpected failure in %s of %r.", signal, middleware, exc_info=True)

    def add_middleware(self, middleware, **options) -> None:
        super().add_middleware(middleware, **options)
        self._hooks.clear()

    def _hooked(self, hook: str) -> list:
        """The middleware whose `hook` is not Middleware's no-op, in order."""
        found = self._hooks.get(hook)
        if found is None:
            noop = getattr(Middleware, hook, None)
            found = self._hooks[hook] = [m for m in self.middleware
                                         if noop is None or getattr(getattr(m, hook), "__func__", None) is not noop]
        return found

    def do_enqueue(self, queue_name: str, *args):
        pipe = getattr(self._local, "pipe", None)
        if pipe is None:
            return self._dispatch("enqueue")(queue_name, *args)
        command = ["enqueue", int(time.time() * 1000), queue_name, self.broker_id, self.heartbeat_timeout,
                   self.dead_message_ttl, "0", self._max_unpack_size(), *args]
        return self.scripts["dispatch"](keys=[self.namespace], args=command, client=pipe)


def redis_client(url: str, timeout: float = CONNECT_TIMEOUT) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_connect_timeout=timeout, socket_timeout=timeout + 5, health_check_interval=30
    )


def build_broker(settings: Settings, middleware: list) -> dramatiq.Broker:
    """The broker of BROKER_URL with exactly `middleware` (boot hands in Fleet's)."""
    if settings.is_rabbitmq:
        return RabbitmqBroker(url=settings.broker_url, middleware=middleware, confirm_delivery=True)
    return FleetRedisBroker(
        client=redis_client(settings.broker_url),
        middleware=middleware,
        namespace=REDIS_NAMESPACE,
        heartbeat_timeout=int(settings.heartbeat_timeout * 1000),
        maintenance_chance=MAINTENANCE_CHANCE,
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
