"""A healthy database connection for every message, given back when the message is settled."""
from __future__ import annotations

from dramatiq.middleware import Middleware

from db.database import database, release_connection, size_pool

# Connections beyond the worker threads: the JobLog writer's, and one spare (the flush at shutdown).
EXTRA_CONNECTIONS = 2


class DatabaseConnections(Middleware):
    """Each worker thread takes a connection from the pool when a message starts and gives it
    back once the message is acked or dead-lettered (after its give-up hook), as a web
    framework does per request. The pool checks a connection when it hands it out and drops
    one whose server end is gone, so a terminated PostgreSQL backend or a restart fails the
    messages running at that moment (ERR_DATABASE, retried), never the ones after.
    The pool of a worker process holds at most its threads + EXTRA_CONNECTIONS."""

    def after_worker_boot(self, broker, worker):
        size_pool(worker.worker_threads + EXTRA_CONNECTIONS)

    def before_process_message(self, broker, message):
        release_connection()  # one left open by anything else in this thread goes back first
        try:
            database.connect()
        except Exception:
            pass  # the database is away: the job's first query fails with ERR_DATABASE and is retried

    def after_ack(self, broker, message):
        release_connection()

    after_nack = after_ack
