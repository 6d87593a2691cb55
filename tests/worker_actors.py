"""Actors for runtime tests, importable by an in-process Worker and by `dramatiq tests.worker_actors`.

They report what happened through Redis (the broker's own), so a test can see what a
worker in another process did.
"""
import json
import os
import time
import uuid

from actors.all import *  # noqa: F401,F403  (boots Fleet, declares the real actors)
from actors.runtime import fleet_actor, task
from core.errors import JobError
from core.state import state_redis


def _note(key: str, value: str) -> None:
    state_redis().rpush(f"test:{key}", value)


def gave_up(message, error) -> None:
    _note(f"gave-up:{message.args[0]}", error.code.code)


@fleet_actor(queue_name="tests", retry_delays=(1, 2), on_give_up=gave_up)
def flaky(key: str, failures: int, code: str = "ERR_API_UNAVAILABLE", retry_after: float | None = None) -> None:
    """Fails `failures` times with `code`, then succeeds; notes the time of every attempt."""
    _note(key, repr(time.time()))
    if state_redis().llen(f"test:{key}") <= failures:
        raise JobError(code, f"planned failure {code}", retry_after=retry_after)


@fleet_actor(queue_name="tests", unique=True)
def unique_sleeper(key: str, seconds: float) -> None:
    _note(key, "start")
    time.sleep(seconds)
    _note(key, "done")


@fleet_actor(queue_name="tests", service="openai", retry_delays=(1, 1, 1), on_give_up=gave_up)
def needs_openai(key: str) -> None:
    _note(key, "ran")


@fleet_actor(queue_name="tests", time_limit=120_000)
def slow(key: str, seconds: float) -> None:
    _note(key, f"start:{os.getpid()}")
    time.sleep(seconds)
    _note(key, f"done:{os.getpid()}")


@fleet_actor(queue_name="tests")
def count(key: str) -> None:
    state_redis().incr(f"test:{key}")


@fleet_actor(queue_name="tests", retry_delays=())
def leaks_secret(key: str) -> None:
    from core.settings import get_settings

    api_key = get_settings().openai_api_key
    import logging

    logging.getLogger("tests.leak").warning("calling with key %s and header Bearer %s", api_key, api_key)
    raise RuntimeError(f"provider rejected key={api_key} Authorization: Bearer {api_key}")


FAULTS = {
    "database": lambda: __import__("peewee").OperationalError("server closed the connection unexpectedly"),
    "redis": lambda: __import__("redis").ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
    "bug": lambda: KeyError("a key the code expected"),
}


@fleet_actor(queue_name="tests", retry_delays=(0, 0), on_give_up=gave_up)
def breaks(key: str, kind: str, failures: int = 1) -> None:
    """Raises a real exception of `kind` (not a JobError) `failures` times, then succeeds."""
    _note(key, kind)
    if state_redis().llen(f"test:{key}") <= failures:
        raise FAULTS[kind]()


@fleet_actor(queue_name="tests", retry_delays=(1,))
def fails_slowly(key: str, seconds: float) -> None:
    """The first attempt works `seconds`, then fails (retryable); the next one succeeds."""
    _note(key, "start")
    if state_redis().llen(f"test:{key}") <= 1:
        time.sleep(seconds)
        raise JobError("ERR_API_UNAVAILABLE", "planned failure after a while")
    _note(key, "done")


def _outage():
    raise JobError("ERR_API_UNAVAILABLE", "HTTP 503")


@fleet_actor(queue_name="tests", service="openai", retry_delays=(1, 1, 1), on_give_up=gave_up)
def calls_openai(key: str) -> None:
    """Calls the OpenAI breaker with a call that fails like a service that is down."""
    from core.breakers import breaker

    _note(key, "ran")
    breaker("openai").call(_outage)


def _hook_fails_once(message, error) -> None:
    key = message.args[0]
    recorded = state_redis().exists(f"fleet:dead-error:{message.message_id}")
    _note(f"hook:{key}", "after the dead letter's record" if recorded else "first")
    if state_redis().incr(f"test:hook-runs:{key}") == 1:
        raise __import__("peewee").OperationalError("server closed the connection unexpectedly")


@fleet_actor(queue_name="tests", retry_delays=(), on_give_up=_hook_fails_once)
def gives_up(key: str) -> None:
    raise JobError("ERR_BAD_REQUEST", "planned permanent failure")
# -- scheduled tasks (`python -m tests.fleet_with_test_tasks scheduler` emits them) --------------

@task("tests.note")
@fleet_actor(queue_name="tests", retry_delays=())
def scheduled_note(key: str, seconds: float = 0, fail: str = "") -> None:
    """Notes each run of `key` as JSON: its own token (pid:random) and the tokens of the other
    runs of `key` in hand when it started (a run whose worker was killed stays in hand)."""
    client = state_redis()
    token = f"{os.getpid()}:{uuid.uuid4().hex[:8]}"
    others = sorted(t.decode() for t in client.smembers(f"test:{key}:in-hand"))
    client.sadd(f"test:{key}:in-hand", token)
    client.rpush(f"test:{key}:runs", json.dumps({"token": token, "others": others}))
    try:
        time.sleep(seconds)
        if fail:
            raise JobError(fail, f"planned failure {fail}")
    finally:
        client.srem(f"test:{key}:in-hand", token)


@fleet_actor(queue_name="tests", retry_delays=(1, 1, 1))
def queries(key: str, seconds: float) -> None:
    """Queries the database, keeps its connection `seconds` longer, then notes that it ran."""
    from db.database import database

    database.execute_sql("SELECT 1")
    time.sleep(seconds)
    _note(key, "done")
