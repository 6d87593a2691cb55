"""A healthy database connection for every message, given back when the message is settled."""
from __future__ import annotations

from dramatiq.middleware import Middleware

from core.settings import get_settings
from core.ticker import Ticker
from db.budget import worker_process
from db.database import IDLE_CHECKS, close_idle, release_connection, size_pool


class DatabaseConnections(Middleware):
    """Each worker thread takes a connection from the pool at a message's first query and gives it
    back once the message is acked or dead-lettered (after its give-up hook), as a web
    framework does per request. The pool checks a connection when it hands it out and drops
    one whose server end is gone, so a terminated PostgreSQL backend or a restart fails the
    messages running at that moment (ERR_DATABASE, retried), never the ones after.
    The pool of a worker process holds at most `db.budget.worker_process(threads)`; one idle for
    FLEET_DB_IDLE_TIMEOUT is closed, so a worker between bursts holds next to none."""

    def __init__(self):
        self._idle = Ticker("fleet-db-idle", self._close_idle)
        self._idle_timeout = 60.0

    def before_worker_boot(self, broker, worker):
        size_pool(worker_process(worker.worker_threads))  # before its threads start taking messages

    def after_worker_boot(self, broker, worker):
        self._idle_timeout = get_settings().db_idle_timeout
        self._idle.start(self._idle_timeout / IDLE_CHECKS)

    def after_worker_shutdown(self, broker, worker):
        self._idle.stop()

    def _close_idle(self) -> None:
        close_idle(self._idle_timeout)  # closing a pooled connection raises nothing (peewee logs it)

    def before_process_message(self, broker, message):
        # one left open by anything else in this thread goes back first; the job's first query
        # takes one (peewee connects on first use, waiting up to POOL_WAIT for a slot), so a job
        # that never queries costs the pool nothing
        release_connection()

    def after_ack(self, broker, message):
        release_connection()

    after_nack = after_ack
