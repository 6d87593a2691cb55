"""Fleet's Dramatiq middleware, one concern a class.

Order matters: `before_*` hooks run in list order, `after_*` hooks in reverse, so
retries decide a message's outcome before unique locks and JobLog read it.
"""
from __future__ import annotations

from dramatiq.middleware import AgeLimit, Callbacks, Pipelines, ShutdownNotifications, TimeLimit

from actors.middleware.breakers import CircuitDeferral
from actors.middleware.joblog import JobLogWriter
from actors.middleware.metrics import PrometheusMetrics
from actors.middleware.presence import WorkerPresence
from actors.middleware.retries import BackoffRetries
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
        TraceContext(),
        WorkerPresence(settings.heartbeat_timeout),
        PrometheusMetrics(settings.metrics_dir),
        JobLogWriter(),
        CircuitDeferral(),
        UniqueJobs(),
        BackoffRetries(settings.retry_delays),
    ]
