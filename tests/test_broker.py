import uuid

import dramatiq
import pytest
import redis

import actors.all  # noqa: F401  (installs the Fleet broker on the test Redis)
from actors import system
from actors.middleware import fleet_middleware
from core.broker import build_broker
from core.net import free_port
from core.settings import load_settings
from tests.helpers import InProcessWorker, fleet, migrated, wait_for


def _recorder(redis_url):
    client = redis.Redis.from_url(redis_url)

    def record(key: str, value: str) -> None:
        client.rpush(key, value)

    return client, record


@pytest.fixture
def recording_actor(broker, redis_url):
    client, record = _recorder(redis_url)
    name = "record_" + uuid.uuid4().hex[:8]
    actor = dramatiq.actor(record, actor_name=name, queue_name="tests")
    yield client, actor


def test_message_through_redis_is_processed_by_a_real_worker(recording_actor, worker, broker):
    client, actor = recording_actor
    key = f"seen:{uuid.uuid4().hex}"
    for i in range(5):
        actor.send(key, str(i))
    broker.join("tests", timeout=10_000)
    assert sorted(v.decode() for v in client.lrange(key, 0, -1)) == ["0", "1", "2", "3", "4"]


def test_message_through_rabbitmq_is_processed_by_a_real_worker(rabbitmq_url, redis_url, tmp_path):
    settings = load_settings({"FLEET_VAR_DIR": str(tmp_path), "BROKER_URL": rabbitmq_url})
    rabbit = build_broker(settings, fleet_middleware(settings))
    client, record = _recorder(redis_url)
    queue = "fleet_test_" + uuid.uuid4().hex[:8]
    actor = dramatiq.actor(record, actor_name="record", queue_name=queue, broker=rabbit)
    worker = InProcessWorker(rabbit, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        key = f"rabbit:{uuid.uuid4().hex}"
        actor.send(key, "hello")
        rabbit.join(queue, timeout=20_000)
        wait_for(lambda: client.lrange(key, 0, -1), timeout=10, message="rabbitmq message")
        assert client.lrange(key, 0, -1) == [b"hello"]
    finally:
        worker.stop()
        for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
            rabbit.channel.queue_delete(name)
        rabbit.close()


def test_fleet_worker_cli_consumes_the_queue(fleet_env, broker, processes, tmp_path):
    migrated(fleet_env["DATABASE_URL"])
    proc = processes.start("worker", "-p", "1", "-t", "2", env=dict(fleet_env, FLEET_LOG_FORMAT="json"))
    log = tmp_path / "worker-0.log"
    try:
        nonce = uuid.uuid4().hex
        system.ping.send(nonce)
        wait_for(lambda: nonce in log.read_text(), timeout=30, message="pong")
        line = next(text for text in log.read_text().splitlines() if nonce in text)
        assert '"msg": "pong"' in line and '"actor": "ping"' in line
    finally:
        assert processes.stop(proc, timeout=15) == 0  # SIGTERM: a graceful stop


@pytest.mark.parametrize("scheme", ["redis", "amqp"])
def test_unreachable_broker_is_a_clear_error_not_a_hang(fleet_env, scheme):
    url = f"{scheme}://127.0.0.1:{free_port()}/"
    state = {"FLEET_STATE_REDIS_URL": fleet_env["BROKER_URL"]} if scheme == "amqp" else {}  # required with RabbitMQ
    # a worker that hung on the broker would outlive the timeout (TimeoutExpired fails the test)
    result = fleet("worker", env=dict(fleet_env, BROKER_URL=url, **state), timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"fleet: broker unreachable at {url}")


def test_password_in_broker_url_is_not_printed(fleet_env):
    url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"
    result = fleet("worker", env=dict(fleet_env, BROKER_URL=url), timeout=30)
    assert result.returncode == 1
    assert "hunter2-secret" not in result.stderr and ":***@" in result.stderr
