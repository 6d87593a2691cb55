import hashlib
import json
import logging

from dramatiq.middleware import Middleware, MiddlewareError

from actors.middleware.outcome import get_outcome
from core.state import state_redis

log = logging.getLogger("fleet.unique")

QUEUED_TTL = 24 * 3600  # a lock outlives any sane backlog, and still expires if its message is lost
RUNNING_GRACE = 120  # beyond the time limit: a dead worker's lock expires, its message runs again

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


# claim_many's locks in one command: SET NX EX a key, 1 where taken, nil where already held
_CLAIM = """
local taken = {}
for i, key in ipairs(KEYS) do
    taken[i] = redis.call('set', key, ARGV[i + 1], 'NX', 'EX', ARGV[1]) and 1 or false
end
return taken
"""


class DuplicateJob(MiddlewareError):
    def __init__(self, key: str, existing_id: str | None):
        super().__init__(f"an identical job is already queued or running ({existing_id})")
        self.key = key
        self.existing_id = existing_id


def unique_key(actor_name: str, args, kwargs) -> str:
    payload = json.dumps([args, kwargs], sort_keys=True, default=str)
    return f"fleet:unique:{actor_name}:{hashlib.sha1(payload.encode()).hexdigest()}"


class UniqueJobs(Middleware):
    """Actors declared `unique=True` have at most one message per arguments queued or running.

    The lock is taken when the message is first sent, kept across retries and deferrals,
    and released when the message ends; it expires if its worker dies.
    """

    @property
    def actor_options(self):
        return {"unique"}

    def _is_unique(self, broker, message) -> bool:
        return bool(broker.get_actor(message.actor_name).options.get("unique"))

    def claim_many(self, broker, messages: list) -> list:
        """The messages whose locks this call took, in one round trip; the others are duplicates.
        Their enqueue then skips the claim (`before_enqueue` sees `unique_claimed`)."""
        client = state_redis()
        if client is None or not messages or not self._is_unique(broker, messages[0]):
            return messages
        keys = [unique_key(m.actor_name, m.args, m.kwargs) for m in messages]
        taken = client.register_script(_CLAIM)(keys=keys, args=[QUEUED_TTL, *(m.message_id for m in messages)])
        claimed = []
        for key, message, ok in zip(keys, messages, taken):
            if ok:
                message.options.update(unique_key=key, unique_claimed=True)
                claimed.append(message)
        return claimed

    def before_enqueue(self, broker, message, delay):
        if message.options.pop("unique_claimed", False) or not self._is_unique(broker, message):
            return
        client = state_redis()
        if client is None:
            return
        key = message.options.get("unique_key")
        if key is None:
            key = unique_key(message.actor_name, message.args, message.kwargs)
            if not client.set(key, message.message_id, nx=True, ex=QUEUED_TTL):
                existing = client.get(key)
                raise DuplicateJob(key, existing.decode() if existing else None)
            message.options["unique_key"] = key
        else:
            client.set(key, message.message_id, ex=QUEUED_TTL + (delay or 0) // 1000)

    def before_process_message(self, broker, message):
        key = message.options.get("unique_key")
        client = state_redis()
        if key and client is not None:
            time_limit = broker.get_actor(message.actor_name).options.get("time_limit", 600_000)
            client.set(key, message.message_id, ex=int(time_limit / 1000) + RUNNING_GRACE)

    def after_process_message(self, broker, message, *, result=None, exception=None):
        outcome = get_outcome(message)
        if outcome and outcome.status in ("retrying", "deferred"):
            return
        key = message.options.get("unique_key")
        client = state_redis()
        if key and client is not None:
            client.eval(_RELEASE, 1, key, message.message_id)

    def after_skip_message(self, broker, message):
        self.after_process_message(broker, message)
