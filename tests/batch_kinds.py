"""Batch kinds for the batch runtime's tests. An item's key says what its handler does:

    ok:<name>           succeed
    sleep:<s>:<name>    sleep s seconds, then succeed
    fail:<CODE>:<name>  fail with CODE (until the test clears `test:heal:<name>`… see `healed`)
    flaky:<n>:<name>    fail retryably (ERR_API_UNAVAILABLE) the first n attempts, then succeed
    crash:<name>        raise an unexpected error (RecursionError, as a hostile file once did)

Every run is noted in Redis (`test:runs:<batch id>`, "<message id> <position>"), so a test can
count how often each item ran and which chunk job ran it.
"""
import time

from actors.all import *  # noqa: F401,F403  (boots Fleet, declares the real actors)
from actors.batches import ItemRun, batch_kind
from core.errors import JobError
from core.state import state_redis

KIND = "test_steps"
COST, TOKENS = 0.0015, 12


def runs_key(batch_id: str) -> str:
    return f"test:runs:{batch_id}"


def runs(batch_id: str) -> list[tuple[str, int]]:
    return [(owner, int(position)) for owner, position in
            (v.decode().split() for v in state_redis().lrange(runs_key(batch_id), 0, -1))]


def heal(name: str) -> None:
    """From now on, `fail:…:<name>` items succeed."""
    state_redis().set(f"test:healed:{name}", 1)


@batch_kind(KIND, label="Test steps", queue_name="tests", retry_delays=(1, 1))
def steps(run: ItemRun) -> dict:
    redis = state_redis()
    redis.rpush(runs_key(run.batch.id), f"{run.owner} {run.item.position}")
    run.charge(COST, TOKENS)
    action, *args = run.item.key.split(":")
    if action == "sleep":
        time.sleep(float(args[0]))
    elif action == "fail" and not redis.exists(f"test:healed:{args[-1]}"):
        raise JobError(args[0], f"planned failure of {run.item.key}")
    elif action == "flaky" and redis.incr(f"test:flaky:{run.batch.id}:{run.item.position}") <= int(args[0]):
        raise JobError("ERR_API_UNAVAILABLE", f"planned outage for {run.item.key}")
    elif action == "crash":
        raise RecursionError("maximum recursion depth exceeded")
    return {"done": run.item.key}


MANY_KIND = "test_many"


@batch_kind(MANY_KIND, label="Test steps, a group at a time", queue_name="tests", retry_delays=(1,), many=True)
def many_steps(runs: list[ItemRun]) -> list:
    """The same steps, a group of items a call: failures come back as exceptions, one an item;
    `flaky` raises for the whole group."""
    redis = state_redis()
    results = []
    for run in runs:
        redis.rpush(runs_key(run.batch.id), f"{run.owner} {run.item.position}")
        action, *args = run.item.key.split(":")
        if action == "flaky" and redis.incr(f"test:flaky:{run.batch.id}:{run.item.position}") <= int(args[0]):
            raise JobError("ERR_RATE_LIMIT", f"planned rate limit for {run.item.key}")
        results.append(JobError(args[0], f"planned failure of {run.item.key}") if action == "fail" else {"done": run.item.key})
    return results
