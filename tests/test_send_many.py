"""`actor.send_many`: pipelined sends that still pass every middleware, with unique locks."""
import uuid

from dramatiq import Message

from core import trace
from core.state import state_redis
from tests import worker_actors as wa
from tests.helpers import wait_for


def queued(broker, queue="tests"):
    return [Message.decode(data) for data in broker.client.hvals(f"{broker.namespace}:{queue}.msgs")]


def test_send_many_sends_every_message_and_workers_run_each_once(db, broker, worker):
    key = uuid.uuid4().hex
    sent, skipped = wa.count.send_many(((key,) for _ in range(2_500)), chunk=700)
    assert (sent, skipped) == (2_500, 0)
    wait_for(lambda: int(state_redis().get(f"test:{key}") or 0) >= 2_500, timeout=60, message="2,500 runs")
    broker.join("tests", timeout=30_000)
    assert int(state_redis().get(f"test:{key}")) == 2_500


def test_send_many_runs_the_middleware_and_skips_work_already_queued(db, broker):
    keys = [uuid.uuid4().hex for _ in range(5)]
    first = wa.unique_sleeper.send(keys[0], 0)
    with trace.traced("trace-many"):
        sent, skipped = wa.unique_sleeper.send_many([(k, 0) for k in keys] + [(keys[1], 0)], chunk=2)
    assert (sent, skipped) == (4, 2)  # keys[0] was queued already, keys[1] came twice
    messages = queued(broker)
    assert sorted(m.args[0] for m in messages) == sorted(keys)
    fresh = [m for m in messages if m.message_id != first.message_id]
    assert {m.options["trace_id"] for m in fresh} == {"trace-many"}
    for m in fresh:  # each lock names its message and the queued copy, as a plain send's does
        holder, queue, redis_id, _, state = state_redis().get(m.options["unique_key"]).decode().split()
        assert (holder, queue, redis_id, state) == (m.message_id, "tests", m.options["redis_message_id"], "q")
        assert "unique_claimed" not in m.options
    assert wa.unique_sleeper.send(keys[3], 0) is None


def test_the_broker_calls_each_middleware_that_has_a_hook_including_one_added_later(settings):
    """The Redis broker skips Middleware's no-op hooks; a hook of any middleware, even one added
    after the first send, still runs in order."""
    from dramatiq.middleware import Middleware

    from core.broker import build_broker

    seen = []

    class Recorder(Middleware):
        def __init__(self, name):
            self.name = name

        def before_enqueue(self, broker, message, delay):
            seen.append(f"{self.name}:before")

        def after_enqueue(self, broker, message, delay):
            seen.append(f"{self.name}:after")

    class Silent(Middleware):  # no hook of its own (Dramatiq warns of two middleware of one type)
        pass

    class LateRecorder(Recorder):
        pass

    broker = build_broker(settings, [Recorder("a"), Silent()])
    try:
        broker.declare_queue("tests-hooks")
        broker.enqueue(Message(queue_name="tests-hooks", actor_name="x", args=(), kwargs={}, options={}))
        broker.add_middleware(LateRecorder("b"))
        broker.enqueue(Message(queue_name="tests-hooks", actor_name="x", args=(), kwargs={}, options={}))
        assert seen == ["a:before", "a:after", "a:before", "b:before", "b:after", "a:after"]
    finally:
        broker.client.delete("fleet:tests-hooks", "fleet:tests-hooks.msgs")
        broker.close()
