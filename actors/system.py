"""Actors of Fleet itself."""
import logging

import dramatiq

log = logging.getLogger("fleet.actors.system")


@dramatiq.actor(queue_name="fleet", retry_delays=())
def ping(nonce: str) -> None:
    """A no-op that proves a worker consumes the queue: it logs `pong` with the nonce."""
    log.info("pong", extra={"nonce": nonce})
