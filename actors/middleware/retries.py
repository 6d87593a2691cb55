import logging
import random

from dramatiq.middleware import Middleware

from actors.middleware.breakers import defer
from actors.middleware.outcome import Outcome, set_outcome
from core.breakers import seconds_until_half_open
from core.dead_letters import remember_error
from core.errors import classify
from core.redact import redact
from core.settings import get_settings

log = logging.getLogger("fleet.retries")

JITTER = 0.05  # up to 5 % later, so a burst of failures does not retry in lockstep


class BackoffRetries(Middleware):
    """Fleet's retry policy, in place of Dramatiq's `Retries`.

    Retryable failures come back after the configured delays (or a longer Retry-After);
    non-retryable ones and spent budgets fail at once: the actor's `on_give_up(message,
    error)` hook runs and the message goes to the dead-letter queue. An open breaker
    defers the message without spending budget.
    """

    def __init__(self, delays: tuple[int, ...]):
        self.delays = tuple(delays)

    @property
    def actor_options(self):
        return {"retry_delays", "on_give_up"}

    def after_process_message(self, broker, message, *, result=None, exception=None):
        if exception is None:
            set_outcome(message, Outcome("success"))
            return
        actor = broker.get_actor(message.actor_name)
        error = classify(exception)
        message.options["error_code"] = error.code.code
        message.options["error"] = redact(error.message)[:500]

        defer_seconds = getattr(exception, "defer_seconds", None)
        if defer_seconds is not None:  # the job asked to wait (over an API's budget): no retry spent
            defer(broker, message, defer_seconds, error.message, code=error.code.code)
            return

        if error.code.code == "ERR_CIRCUIT_OPEN":
            service = actor.options.get("service", "")
            wait = (seconds_until_half_open(service) if service else 0) or get_settings().circuit_reset
            defer(broker, message, wait, error.message)
            return

        delays = actor.options.get("retry_delays", self.delays)
        retries = message.options.get("retries", 0)
        if not error.retryable or retries >= len(delays):
            set_outcome(message, Outcome("failed", error))
            message.fail()
            remember_error(broker, message.message_id, error.code.code, message.options["error"])
            log.warning("job failed", extra={"error_code": error.code.code, "retries": retries})
            self._give_up(actor, message, error)
            return

        delay = delays[retries] * random.uniform(1.0, 1.0 + JITTER)
        if error.retry_after:
            delay = max(delay, error.retry_after)
        message.options["retries"] = retries + 1
        set_outcome(message, Outcome("retrying", error, delay))
        log.info("job retrying", extra={"error_code": error.code.code, "delay_seconds": round(delay, 2)})
        broker.enqueue(message, delay=int(delay * 1000))

    @staticmethod
    def _give_up(actor, message, error) -> None:
        hook = actor.options.get("on_give_up")
        if hook is None:
            return
        try:
            hook(message, error)
        except Exception:
            log.exception("on_give_up hook failed", extra={"hook": getattr(hook, "__name__", repr(hook))})
