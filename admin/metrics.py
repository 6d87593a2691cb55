"""/metrics: Prometheus text, public like /healthz. Values are read when scraped."""
from __future__ import annotations

from datetime import timedelta

import dramatiq
from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from admin.stats import counts_by_status
from core.breakers import states
from core.queues import queue_depths
from core.state import state_redis
from db.models import utcnow

blueprint = Blueprint("metrics", __name__)


class FleetCollector:
    def collect(self):
        queues = GaugeMetricFamily("fleet_queue_messages", "Messages in a queue, by state.", labels=["queue", "state"])
        for depth in queue_depths(dramatiq.get_broker()):
            for state in ("ready", "in_flight", "delayed", "dead"):
                value = getattr(depth, state)
                if value is not None:
                    queues.add_metric([depth.queue, state], value)
        yield queues

        jobs = GaugeMetricFamily("fleet_job_attempts_24h", "JobLog attempts of the last 24 hours, by status.",
                                 labels=["status"])
        for status, count in counts_by_status(utcnow() - timedelta(hours=24)).items():
            jobs.add_metric([status], count)
        yield jobs

        breakers = GaugeMetricFamily("fleet_breaker_open", "1 while a service's circuit breaker is open.",
                                     labels=["service"])
        for service, state in states().items():
            breakers.add_metric([service], 1 if state == "open" else 0)
        yield breakers

        client = state_redis()
        if client is not None:  # the JobLog writers count there what their full buffers could not keep
            yield CounterMetricFamily("fleet_joblog_dropped", "Attempts that got no JobLog row (writer buffer full).",
                                      value=int(client.get("fleet:joblog:dropped") or 0))


@blueprint.route("/metrics")
def metrics():
    registry = CollectorRegistry()
    registry.register(FleetCollector())
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
