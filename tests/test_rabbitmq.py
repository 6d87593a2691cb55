"""RabbitMQ on a par with Redis: batched sends, dead letters listed, requeued and deleted (its
`.XQ` queues), queue depths from AMQP, and a lost message's unique lock taken over. A real
RabbitMQ (FLEET_TEST_RABBITMQ_URL) with the test Redis as the state Redis; real workers."""
from __future__ import annotations

import uuid

import dramatiq
import pytest
import redis

from actors.middleware import fleet_middleware
from actors.runtime import FleetActor
from core import dead_letters
from core.broker import build_broker
from core.errors import JobError
from core.queues import queue_depths
from core.settings import load_settings
from tests.helpers import InProcessWorker, wait_for


@pytest.fixture
def rabbit(rabbitmq_url, redis_url, tmp_path, broker):
    """A Fleet broker on RabbitMQ (its state in the test Redis), with a queue of this test."""
    settings = load_settings({"FLEET_VAR_DIR": str(tmp_path), "BROKER_URL": rabbitmq_url,
                              "FLEET_STATE_REDIS_URL": redis_url})
    rabbit = build_broker(settings, fleet_middleware(settings))
    rabbit.test_queue = "fleet_test_" + uuid.uuid4().hex[:8]
    yield rabbit
    for name in (rabbit.test_queue, f"{rabbit.test_queue}.DQ", f"{rabbit.test_queue}.XQ"):
        rabbit.channel.queue_delete(name)
    rabbit.close()


def _actor(rabbit, fn, **options):
    return dramatiq.actor(fn, actor_class=FleetActor, actor_name=f"{fn.__name__}_{uuid.uuid4().hex[:6]}",
                          queue_name=rabbit.test_queue, broker=rabbit, **options)


@pytest.fixture
def worker_on(rabbit):
    started = []

    def start():
        worker = InProcessWorker(rabbit, worker_threads=2, worker_timeout=100)
        worker.start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def test_send_many_on_rabbitmq_sends_each_once_in_batches_and_skips_what_is_queued(rabbit, redis_url, worker_on):
    client = redis.Redis.from_url(redis_url)
    key = f"rabbit:{uuid.uuid4().hex}"

    def record(key: str, n: int) -> None:
        client.rpush(key, n)

    actor = _actor(rabbit, record, unique=True)
    assert actor.send_many((key, n) for n in range(300)) == (300, 0)
    assert actor.send_many((key, n) for n in range(300)) == (0, 300)  # their unique locks hold
    [depth] = [d for d in queue_depths(rabbit) if d.queue == rabbit.test_queue]
    assert (depth.ready, depth.in_flight, depth.dead) == (300, None, 0)  # in flight: no management API here

    worker_on()
    wait_for(lambda: client.llen(key) >= 300, timeout=60, message="300 jobs run")
    rabbit.join(rabbit.test_queue, timeout=20_000)
    assert sorted(int(n) for n in client.lrange(key, 0, -1)) == list(range(300))
    assert actor.send(key, 0) is not None  # each lock was released when its job ended


def test_dead_letters_on_rabbitmq_are_listed_requeued_and_deleted(rabbit, redis_url, worker_on):
    client = redis.Redis.from_url(redis_url)
    key = f"rabbit:{uuid.uuid4().hex}"
    client.set(f"{key}:fail", 1)

    def refused(key: str, n: int) -> None:
        if client.get(f"{key}:fail"):
            raise JobError("ERR_BAD_REQUEST", f"the provider refused item {n}")
        client.rpush(key, n)

    actor = _actor(rabbit, refused)
    first, second = actor.send(key, 1), actor.send(key, 2)
    worker_on()
    wait_for(lambda: dead_letters.count_dead_letters(rabbit) == 2, timeout=30, message="two dead letters")

    listed = {d.message_id: d for d in dead_letters.list_dead_letters(rabbit, 10)}
    assert set(listed) == {first.message_id, second.message_id}
    assert listed[first.message_id].error_code == "ERR_BAD_REQUEST"
    assert listed[first.message_id].error == "the provider refused item 1"
    assert listed[first.message_id].args == (key, 1) and listed[first.message_id].queue == rabbit.test_queue
    assert dead_letters.find_dead_letter(rabbit, second.message_id).args == (key, 2)
    assert dead_letters.count_dead_letters(rabbit) == 2  # looking took nothing away

    client.delete(f"{key}:fail")
    result = dead_letters.requeue(rabbit, [first.message_id, "no-such-id"])
    assert (result.requeued, result.missing) == (1, ["no-such-id"])
    wait_for(lambda: client.lrange(key, 0, -1) == [b"1"], timeout=30, message="the requeued job run")
    assert dead_letters.delete(rabbit, [second.message_id]) == (1, [])
    assert dead_letters.count_dead_letters(rabbit) == 0
    assert dead_letters.list_dead_letters(rabbit, 10) == []


def test_a_unique_lock_whose_worker_died_with_its_message_is_taken_over(rabbit, rabbitmq_url, redis_url, processes,
                                                                        tmp_path):
    """A worker SIGKILLed while it runs a unique job, and the message lost with it (the queue
    purged): once the dead process's heartbeat has expired, the next send takes the lock over,
    as on Redis, instead of waiting for the lock's 24-hour TTL."""
    import os
    import signal

    from actors.middleware.unique import unique_key
    from core.identity import host_name
    from core.state import state_redis

    rabbit.channel.queue_declare("tests", durable=True, passive=False,
                                 arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "tests.XQ"})
    rabbit.channel.queue_purge("tests")

    def unique_sleeper(key: str, seconds: float) -> None:  # tests/worker_actors.py's, sent from here
        raise AssertionError("runs in the worker process")

    actor = dramatiq.actor(unique_sleeper, actor_class=FleetActor, queue_name="tests", broker=rabbit, unique=True)
    env = {**os.environ, "BROKER_URL": rabbitmq_url, "FLEET_STATE_REDIS_URL": redis_url,
           "FLEET_VAR_DIR": str(tmp_path / "var"), "FLEET_HEARTBEAT_TIMEOUT": "6"}
    worker = processes.worker("tests.worker_actors", "-p", "1", "-t", "1", "-Q", "tests", env=env)
    key = uuid.uuid4().hex
    lock = unique_key("unique_sleeper", (key, 60), {})
    try:
        assert actor.send(key, 60) is not None
        wait_for(lambda: (v := state_redis().get(lock)) and v.decode().split()[4] == "r", timeout=30,
                 message="the job running")
        running = state_redis().get(lock).decode().split()
        assert running[5].startswith(f"{host_name()}~")  # the process that runs it
        processes.stop(worker, signal.SIGKILL)
        wait_for(lambda: rabbit.get_queue_message_counts("tests")[0] == 1, timeout=30,
                 message="RabbitMQ giving the message back")
        rabbit.channel.queue_purge("tests")  # … and losing it

        assert actor.send(key, 60) is None  # the holder's process may still be alive for all we know
        taken = wait_for(lambda: actor.send(key, 60), timeout=30, message="the lock taken over")
        assert state_redis().get(lock).decode().split()[0] == taken.message_id
    finally:
        rabbit.channel.queue_purge("tests")
        state_redis().delete(lock)


def test_in_flight_counts_are_read_from_the_management_api_when_one_is_named():
    """RabbitMQ's management API is not enabled where the tests run: a stand-in answers as it
    does (GET /api/queues/<vhost>, basic auth), and its counts are what Fleet shows."""
    import json
    import threading

    from werkzeug.serving import make_server
    from werkzeug.wrappers import Request, Response

    from core.queues import rabbitmq_in_flight

    seen = []

    @Request.application
    def management(request):
        seen.append((request.environ.get("RAW_URI") or request.path, request.authorization.username,
                     request.authorization.password, request.args.get("columns")))
        return Response(json.dumps([{"name": "workouts", "messages_unacknowledged": 7},
                                    {"name": "workouts.XQ", "messages_unacknowledged": 0}]),
                        content_type="application/json")

    server = make_server("127.0.0.1", 0, management, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        found = rabbitmq_in_flight(f"http://ops:s3cret@127.0.0.1:{server.server_port}",
                                   "amqp://guest:guest@127.0.0.1:5672/fleet")
    finally:
        server.shutdown()
    assert found == {"workouts": 7, "workouts.XQ": 0}
    [(path, user, password, columns)] = seen
    assert path.startswith("/api/queues/fleet") and (user, password) == ("ops", "s3cret")
    assert columns == "name,messages_unacknowledged"
