import logging

from dramatiq.middleware import Middleware, SkipMessage

from actors.middleware.outcome import Outcome, option, set_outcome
from actors.middleware.settle import later
from core.backoff import jittered
from core.breakers import seconds_to_wait
from core.errors import CODES, Classified
from core.settings import get_settings

log = logging.getLogger("fleet.breakers")

DEFER_JITTER = 0.1  # a deferral up to 10 % longer …
DEFER_JITTER_SECONDS = 0.5  # … and up to half a second more, so waiting jobs do not wake together


def deferral_spent(broker, message) -> bool:
    """Has the message waited for breakers FLEET_MAX_DEFER seconds (or its `max_defer`) already?"""
    limit = option(broker, message, "max_defer", get_settings().max_defer)
    return message.options.get("deferred_seconds", 0) >= limit


def defer(broker, message, seconds: float, reason: str, code: str = "ERR_CIRCUIT_OPEN", counts: bool = True) -> Outcome:
    """Put the message back, delayed, without spending its retry budget; unless `counts` is
    False (the daily spend cap), the wait adds to its FLEET_MAX_DEFER."""
    seconds = jittered(seconds, spread=DEFER_JITTER, extra=min(DEFER_JITTER_SECONDS, seconds / 2))
    message.options["deferrals"] = message.options.get("deferrals", 0) + 1
    if counts:
        message.options["deferred_seconds"] = round(message.options.get("deferred_seconds", 0) + seconds, 3)
    later(message, "enqueue deferred job", lambda: broker.enqueue(message, delay=int(seconds * 1000)))
    outcome = Outcome("deferred", Classified(CODES[code], reason), seconds)
    set_outcome(message, outcome)
    return outcome


class CircuitDeferral(Middleware):
    """Jobs of an actor declared with `service=` wait while that service's breaker is open (or
    while another process makes its half-open trial call), up to FLEET_MAX_DEFER seconds a
    message; past that they run, meet the open breaker, and fail with ERR_CIRCUIT_OPEN."""

    @property
    def actor_options(self):
        return {"service", "max_defer"}

    def before_process_message(self, broker, message):
        service = option(broker, message, "service")
        if not service or deferral_spent(broker, message):
            return
        wait = seconds_to_wait(service)
        if wait > 0:
            outcome = defer(broker, message, wait, f"circuit breaker for {service} is open")
            log.info("job deferred: breaker open", extra={"service": service, "delay_seconds": round(outcome.delay_seconds, 1)})
            raise SkipMessage(f"breaker for {service} open")
