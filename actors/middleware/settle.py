"""What must be done before a message is acknowledged: enqueue its retry or deferral, run the
give-up hook, release its unique lock.

Middleware queue these steps on the message (`later`) as they decide its outcome, and
`Settlement` runs them just before Dramatiq acks or dead-letters it. When a step fails
because Redis or the database is away, the message is not acknowledged: `NotSettled` is a
connection error to Dramatiq's worker, which keeps the message and tries again every 5
seconds (as it does when the ack itself fails), resuming at the step that failed. So a retry
that cannot be enqueued is never acked away, and a give-up hook that cannot reach the
database runs again instead of being only logged. A step that fails for any other reason (a
bug) is logged with its traceback and skipped. A stale copy (its message was redelivered to
another attempt meanwhile, see actors/middleware/fencing.py) settles nothing: its steps are
dropped.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from dramatiq.errors import ConnectionClosed
from dramatiq.middleware import Middleware, MiddlewareError

from actors.middleware.fencing import stale
from core.errors import classify, is_infrastructure
from db.database import release_connection

log = logging.getLogger("fleet.settle")


class NotSettled(MiddlewareError, ConnectionClosed):
    """Raised from `before_ack`/`before_nack`: a MiddlewareError, so Dramatiq lets it through
    the hook, and a connection error, so its worker keeps the message and tries again."""


def later(message, name: str, step: Callable[[], None]) -> None:
    """Run `step` before the message is acknowledged (steps run in the order they were queued)."""
    steps = getattr(message, "fleet_steps", None)
    if steps is None:
        steps = message.fleet_steps = []
    steps.append((name, step))


def _not_settled(name: str, exc: Exception) -> NotSettled:
    release_connection()  # a broken connection must not be used again
    log.warning("message not settled yet; will try again", extra={
        "step": name, "error_code": classify(exc).code.code, "error": str(exc)[:200]})
    return NotSettled(f"{name}: {exc}")


class Settlement(Middleware):
    def before_ack(self, broker, message):
        steps = getattr(message, "fleet_steps", None) or []
        try:
            if steps and stale(message, strict=True):  # without steps the ack itself checks (fencing)
                steps.clear()
        except Exception as exc:
            if is_infrastructure(exc):
                raise _not_settled("check the delivery's owner", exc) from exc
            log.exception("delivery owner not checked")
        while steps:
            name, step = steps[0]
            try:
                step()
            except Exception as exc:
                if is_infrastructure(exc):
                    raise _not_settled(name, exc) from exc
                log.exception("post-processing step failed", extra={"step": name})
            steps.pop(0)

    before_nack = before_ack
