"""Fleet's Dramatiq middleware, one concern a class.

Order matters: `before_*` hooks run in list order, `after_*` hooks in reverse, so
retries decide a message's outcome before unique locks and JobLog read it, and the
database connection is taken first and given back last. `DeliveryFencing` takes a message's
delivery before JobLog opens its row (the row's run id is the delivery's owner). `Settlement` runs, just before
the ack, the writes the others queued (`settle.later`).
"""
from __future__ import annotations

from dramatiq.middleware import AgeLimit, Callbacks, Pipelines, ShutdownNotifications, TimeLimit

from actors.middleware.breakers import CircuitDeferral
from actors.middleware.cancel import Cancellations
from actors.middleware.connections import DatabaseConnections
from actors.middleware.fencing import DeliveryFencing
from actors.middleware.held import HeldMessages
from actors.middleware.invalid import InvalidMessages
from actors.middleware.joblog import JobLogWriter
from actors.middleware.lifecycle import DieWithMainProcess
from actors.middleware.metrics import PrometheusMetrics
from actors.middleware.outages import OutagePause
from actors.middleware.pauses import QueuePauses
from actors.middleware.presence import WorkerPresence
from actors.middleware.retries import BackoffRetries
from actors.middleware.schedule import ScheduledRuns
from actors.middleware.settle import Settlement
from actors.middleware.trace import TraceContext
from actors.middleware.unique import UniqueJobs
from core.settings import Settings


def fleet_middleware(settings: Settings) -> list:
    return [
        AgeLimit(),
        TimeLimit(),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        DieWithMainProcess(),
        DatabaseConnections(),
        HeldMessages(),
        OutagePause(),
        TraceContext(),
        WorkerPresence(settings.heartbeat_timeout),
        QueuePauses(),
        PrometheusMetrics(settings.metrics_dir),
        InvalidMessages(),
        Cancellations(),
        DeliveryFencing(),
        JobLogWriter(),
        CircuitDeferral(),
        UniqueJobs(),
        ScheduledRuns(),
        BackoffRetries(settings.retry_delays),
        Settlement(),
    ]
