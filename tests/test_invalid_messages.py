"""Messages that are no job (not JSON, fields missing, an unknown actor): dead-lettered once with
ERR_INVALID_MESSAGE, shown and deletable everywhere dead letters are, never blocking the others."""
import json
import os
import re
import uuid

import pytest
from dramatiq import Message

from core import dead_letters
from core.state import state_redis
from db.models.jobs import JobLog
from tests import worker_actors as wa
from tests.helpers import fleet, wait_for

NOT_JSON = b"\x00\x01 this is not a message " + b"x" * 10_000


def push_raw(broker, data: bytes, queue: str = "tests") -> str:
    redis_id = str(uuid.uuid4())
    broker.client.hset(f"fleet:{queue}.msgs", redis_id, data)
    broker.client.rpush(f"fleet:{queue}", redis_id)
    return redis_id


@pytest.fixture
def invalid(broker):
    """Two broken messages between valid ones, all on the queue before a worker fetches them."""
    key = uuid.uuid4().hex
    for _ in range(3):
        wa.count.send(key)
    not_json = push_raw(broker, NOT_JSON)
    no_fields = push_raw(broker, json.dumps({"queue_name": "tests", "actor_name": "count"}).encode())
    unknown = Message(queue_name="tests", actor_name="no_such_actor", args=(1,), kwargs={}, options={})
    broker.enqueue(unknown)
    for _ in range(3):
        wa.count.send(key)
    return key, {not_json, no_fields}, unknown


def test_invalid_messages_are_dead_lettered_once_with_their_code_and_never_block_the_others(db, broker, invalid):
    from tests.helpers import InProcessWorker

    key, undecodable, unknown = invalid
    worker = InProcessWorker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        wait_for(lambda: state_redis().get(f"test:{key}") == b"6", timeout=20, message="the six valid messages")
        wait_for(lambda: dead_letters.count_dead_letters(broker) == 3, timeout=20, message="three dead letters")
        worker.join()
    finally:
        worker.stop()
    assert broker.client.llen("fleet:tests") == 0 and broker.client.hlen("fleet:tests.msgs") == 0
    assert broker.client.scard(f"fleet:__acks__.{broker.broker_id}.tests") == 0  # nothing stranded
    letters = {d.message_id: d for d in dead_letters.list_dead_letters(broker)}
    assert set(letters) == undecodable | {unknown.message_id}
    assert {d.error_code for d in letters.values()} == {"ERR_INVALID_MESSAGE"}
    raw = [d for d in letters.values() if d.raw and "not a message" in d.raw]
    assert len(raw) == 1 and len(raw[0].raw) <= dead_letters.RAW_LIMIT  # raw bytes kept, cut
    assert letters[unknown.message_id].actor == "no_such_actor"
    assert "no_such_actor" in letters[unknown.message_id].error

    rows = wait_for(lambda: (r := list(JobLog.select().where(JobLog.error_code == "ERR_INVALID_MESSAGE"))) and
                    len(r) == 3 and r, message="a JobLog row each")
    assert {r.status for r in rows} == {"failed"} and {r.message_id for r in rows} == set(letters)


def test_cli_and_panel_list_and_delete_invalid_dead_letters(db, broker, invalid, worker, fleet_env):
    key, undecodable, unknown = invalid
    wait_for(lambda: dead_letters.count_dead_letters(broker) == 3, timeout=20, message="three dead letters")
    env = dict(fleet_env, DATABASE_URL=os.environ["DATABASE_URL"])

    listed = fleet("jobs", "dead-letters", env=env)
    assert listed.returncode == 0, listed.stderr
    assert all(i in listed.stdout for i in undecodable) and "ERR_INVALID_MESSAGE" in listed.stdout
    assert "raw:" in listed.stdout

    everything = fleet("jobs", "requeue", "--all", env=env)
    assert everything.returncode == 0, everything.stderr
    assert "2 dead letter(s) are not valid messages and stay" in everything.stdout
    assert "Requeued 1 dead letter(s)." in everything.stdout  # the unknown actor's: it comes back
    wait_for(lambda: dead_letters.count_dead_letters(broker) == 3, timeout=20, message="dead-lettered again")

    from actors.accounts import create_account
    from admin.app import create_app

    create_account("dl@example.com", "a-long-password", "admin")
    client = create_app().test_client()
    login = client.get("/admin/login").text
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', login).group(1)
    client.post("/admin/login", data={"email": "dl@example.com", "password": "a-long-password", "csrf_token": token})
    page = client.get("/admin/dead-letters/")
    assert page.status_code == 200 and "ERR_INVALID_MESSAGE" in page.text and "(not a valid message)" in page.text
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text).group(1)
    first, second = sorted(undecodable)
    deleted = client.post("/admin/dead-letters/action/", data={"action": "delete", "rowid": [first],
                                                                "csrf_token": token}, follow_redirects=True)
    assert deleted.status_code == 200 and "Deleted 1 dead letter(s)." in deleted.text
    assert fleet("jobs", "delete", second, env=env).returncode == 0
    assert {d.message_id for d in dead_letters.list_dead_letters(broker)} == {unknown.message_id}
