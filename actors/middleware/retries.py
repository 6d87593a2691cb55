import logging

from dramatiq.middleware import Middleware

from actors.middleware.breakers import defer, deferral_spent
from actors.middleware.fencing import mark_stale, stale
from actors.middleware.outcome import Outcome, option, set_outcome
from actors.middleware.settle import later
from core import dead_letters
from core.backoff import jittered
from core.breakers import seconds_to_wait
from core.errors import classify
from core.fencing import StaleDelivery
from core.redact import redact
from core.settings import get_settings
from db.models import utcnow

log = logging.getLogger("fleet.retries")

JITTER = 0.05  # up to 5 % later, so a burst of failures does not retry in lockstep


class _FleetLogsFailures(logging.Filter):
    """Dramatiq logs every failed attempt at ERROR with a traceback; Fleet logs its own line:
    WARNING with the code for an expected retry, ERROR with the traceback for a give-up or an
    unexpected error (ERR_INTERNAL)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to process message")


def _quiet_dramatiq_failure_lines() -> None:
    logger = logging.getLogger("dramatiq.worker.WorkerThread")
    if not any(isinstance(f, _FleetLogsFailures) for f in logger.filters):
        logger.addFilter(_FleetLogsFailures())


def attempt_started_at(message):
    """When this attempt of the message started (UTC), for an `on_give_up` hook that must only
    touch what its own attempt worked on."""
    return getattr(message, "fleet_started_at", None) or utcnow()


class BackoffRetries(Middleware):
    """Fleet's retry policy, in place of Dramatiq's `Retries`.

    Retryable failures (and unexpected ones, ERR_INTERNAL) come back after the configured
    delays (or a longer Retry-After); known permanent ones and spent budgets fail at once:
    the actor's `on_give_up(message, error)` hook runs first, then the message goes to the
    dead-letter queue. An open breaker defers the message without spending budget, up to
    FLEET_MAX_DEFER. A success resolves earlier dead letters of the same actor and arguments.
    Every write this needs happens before the ack (`settle.later`), so none is lost to an outage.
    """

    def __init__(self, delays: tuple[int, ...]):
        self.delays = tuple(delays)
        _quiet_dramatiq_failure_lines()

    @property
    def actor_options(self):
        return {"retry_delays", "on_give_up"}

    def before_process_message(self, broker, message):
        message.fleet_started_at = utcnow()

    def after_process_message(self, broker, message, *, result=None, exception=None):
        if isinstance(exception, StaleDelivery):
            mark_stale(message, exception.owner)
        if getattr(message, "fleet_stale", False) or (exception is not None and stale(message)):
            set_outcome(message, Outcome("abandoned"))  # redelivered meanwhile: the other copy decides
            return
        if exception is None:
            set_outcome(message, Outcome("success"))
            if dead_letters.may_have_dead_letters(broker, message.actor_name):
                later(message, "resolve dead letters", lambda: dead_letters.resolve(broker, message))
            return
        error = classify(exception)
        code = error.code.code
        message.options["error_code"] = code
        message.options["error"] = redact(error.message)[:500]

        defer_seconds = getattr(exception, "defer_seconds", error.defer_seconds)
        counts = getattr(exception, "counts_toward_max_defer", True)
        if defer_seconds is not None and (not counts or not deferral_spent(broker, message)):
            # the job asked to wait (over an API's budget, the spend cap), or the database's disk is full: no retry spent
            defer(broker, message, defer_seconds, error.message, code=code, counts=counts)
            return

        if code == "ERR_CIRCUIT_OPEN" and not deferral_spent(broker, message):
            service = option(broker, message, "service")
            wait = (seconds_to_wait(service) if service else 0) or get_settings().circuit_reset
            defer(broker, message, wait, error.message)
            return

        delays = option(broker, message, "retry_delays", self.delays)
        retries = message.options.get("retries", 0)
        if not error.retryable or retries >= len(delays) or code == "ERR_CIRCUIT_OPEN":
            self._give_up(broker, message, error, exception)
            return

        delay = jittered(delays[retries], spread=JITTER)
        if error.retry_after:
            delay = max(delay, error.retry_after)
        message.options["retries"] = retries + 1
        set_outcome(message, Outcome("retrying", error, delay))
        later(message, "enqueue retry", lambda: broker.enqueue(message, delay=int(delay * 1000)))
        log.warning("job retrying", exc_info=exception if code == "ERR_INTERNAL" else None, extra={
            "error_code": code, "error": message.options["error"], "retry": retries + 1,
            "delay_seconds": round(delay, 2)})

    @staticmethod
    def _give_up(broker, message, error, exception) -> None:
        set_outcome(message, Outcome("failed", error))
        message.fail()
        log.error("job failed", exc_info=exception, extra={
            "error_code": error.code.code, "error": message.options["error"], "retries": message.options.get("retries", 0)})
        hook = broker.get_actor(message.actor_name).options.get("on_give_up")
        if hook is not None:
            later(message, f"on_give_up hook {getattr(hook, '__name__', hook)}", lambda: hook(message, error))
        later(message, "record dead letter", lambda: dead_letters.record(
            broker, message, error.code.code, message.options["error"]))
