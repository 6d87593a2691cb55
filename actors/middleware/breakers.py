import logging
import random

from dramatiq.middleware import Middleware, SkipMessage

from actors.middleware.outcome import Outcome, set_outcome
from core.breakers import seconds_until_half_open
from core.errors import CODES, Classified

log = logging.getLogger("fleet.breakers")


def defer(broker, message, seconds: float, reason: str, code: str = "ERR_CIRCUIT_OPEN") -> Outcome:
    """Put the message back, delayed, without spending its retry budget."""
    seconds = seconds * random.uniform(1.0, 1.1) + random.uniform(0.0, 0.5)
    message.options["deferrals"] = message.options.get("deferrals", 0) + 1
    broker.enqueue(message, delay=int(seconds * 1000))
    outcome = Outcome("deferred", Classified(CODES[code], reason), seconds)
    set_outcome(message, outcome)
    return outcome


class CircuitDeferral(Middleware):
    """Jobs of an actor declared with `service=` wait while that service's breaker is open."""

    @property
    def actor_options(self):
        return {"service"}

    def before_process_message(self, broker, message):
        service = broker.get_actor(message.actor_name).options.get("service")
        if not service:
            return
        wait = seconds_until_half_open(service)
        if wait > 0:
            outcome = defer(broker, message, wait, f"circuit breaker for {service} is open")
            log.info("job deferred: breaker open", extra={"service": service, "delay_seconds": round(outcome.delay_seconds, 1)})
            raise SkipMessage(f"breaker for {service} open")
