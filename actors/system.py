"""Actors of Fleet itself."""
import logging

import dramatiq

log = logging.getLogger("fleet.actors.system")


@dramatiq.actor(queue_name="fleet", max_retries=0)
def ping(token: str) -> str:
    """A no-op that proves a worker consumes the queue; `fleet` health tooling sends it."""
    log.info("pong", extra={"token": token})
    return token
