"""Messages that are no job: not JSON, fields missing, or for an actor no worker declares.

Fleet's Redis consumer turns an undecodable message into a stand-in for the actor
INVALID_ACTOR (see `core.broker`), so it takes the same way as a message for an unknown
actor: Dramatiq's consumer dead-letters it at once, without running anything. Here it
gets its code, ERR_INVALID_MESSAGE, with the reason (and, through the JobLog, a row).
"""
from __future__ import annotations

import logging

from dramatiq.middleware import Middleware

from actors.middleware.outcome import Outcome, get_outcome, set_outcome
from actors.middleware.settle import later
from core import dead_letters
from core.errors import CODES, Classified

log = logging.getLogger("fleet.invalid")


class InvalidMessages(Middleware):
    def before_nack(self, broker, message):
        if message.actor_name in broker.actors or get_outcome(message) is not None:
            return  # a job that failed (its outcome is recorded), or this nack is tried again
        reason = message.options.get("invalid_reason") or f"no actor named {message.actor_name!r} is declared"
        error = Classified(CODES["ERR_INVALID_MESSAGE"], reason)
        set_outcome(message, Outcome("failed", error))
        log.error("invalid message set aside as a dead letter", extra={"error_code": error.code.code, "error": reason})
        later(message, "record dead letter", lambda: dead_letters.record(broker, message, error.code.code, reason))
