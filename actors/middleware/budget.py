import logging

from dramatiq.middleware import Middleware, SkipMessage

from actors.middleware.breakers import defer
from actors.middleware.outcome import get_outcome
from core.budget import OverBudget, budget

log = logging.getLogger("fleet.budget")

MAX_WAIT = 2.0  # seconds a job waits in its thread for a request slot before it is deferred


class ApiBudgets(Middleware):
    """Jobs of an actor declared with `service=` spend a request of that service's shared
    budget (`core.budget`) before they run: they wait briefly for a slot, and beyond that are
    deferred without spending their retry budget (JobLog: `deferred`, ERR_RATE_LIMIT, "over
    the shared … budget"). A 429 from the service shrinks the budget for its Retry-After."""

    def before_process_message(self, broker, message):
        service_budget = budget(broker.get_actor(message.actor_name).options.get("service"))
        if service_budget is None:
            return
        try:
            service_budget.acquire(MAX_WAIT)
        except OverBudget as over:
            outcome = defer(broker, message, over.seconds, f"{over}; deferred, no retry spent", code="ERR_RATE_LIMIT")
            log.info("job deferred: over budget", extra={"service": over.service, "delay_seconds": round(outcome.delay_seconds, 2)})
            raise SkipMessage(str(over)) from None

    def after_process_message(self, broker, message, *, result=None, exception=None):
        outcome = get_outcome(message)  # decided by the retries, which run before this hook
        if exception is None or outcome is None or outcome.error is None or outcome.error.code.code != "ERR_RATE_LIMIT":
            return
        service_budget = budget(broker.get_actor(message.actor_name).options.get("service"))
        if service_budget is not None:
            rate = service_budget.shrink(outcome.error.retry_after or 1.0)
            log.warning("429 from the API: budget shrunk", extra={"service": service_budget.service, "rate": rate,
                                                                 "seconds": outcome.error.retry_after})
