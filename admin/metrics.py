"""/metrics: Prometheus text, public like /healthz (unless FLEET_METRICS_TOKEN_REQUIRED: admin.bearer).

- `fleet_jobs_total{actor,queue,status}` and `fleet_job_duration_seconds{actor,status}`:
  counters kept by the workers (actors.middleware.metrics, prometheus_client's
  multiprocess mode), read from the files of `var/metrics/`: never a JobLog count.
- `fleet_queue_messages{queue,state}`: four counts a known queue, one Redis round trip.
- `fleet_queue_oldest_ready_seconds{queue}`: how long the oldest ready message has waited.
- `fleet_breaker_open{service}`: 1 while a service's breaker is open.
- `fleet_openai_budget_used{limit}` / `fleet_openai_budget_limit{limit}`: requests and tokens in
  the last minute against the limits; `fleet_openai_events_last_hour{event}`: 429s and deferrals;
  `fleet_openai_spend_usd_today` / `fleet_openai_daily_cap_usd`; `fleet_openai_backlog_calls`.
- `fleet_alerts_firing{rule,severity}`: subjects of a Fleet alert rule firing now.

Gauges read from Redis are cached for a few seconds (admin.cache); a part that does not
answer is left out and named in `fleet_scrape_error{part}`, so a scrape never fails.
"""
from __future__ import annotations

import logging

import dramatiq
from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from actors.ai import status as ai_status
from admin.bearer import metrics_login
from admin.cache import cached
from core.breakers import states
from core.queues import queue_depths
from core.state import state_redis

blueprint = Blueprint("metrics", __name__)
log = logging.getLogger("fleet.panel")

CACHE_SECONDS = 5


def queue_gauges() -> list:
    queues = GaugeMetricFamily("fleet_queue_messages", "Messages in a queue, by state.", labels=["queue", "state"])
    for depth in queue_depths(dramatiq.get_broker()):
        for state in ("ready", "in_flight", "delayed", "dead"):
            value = getattr(depth, state)
            if value is not None:
                queues.add_metric([depth.queue, state], value)
    return [queues]


def queue_age_gauges() -> list:
    from actors.alerts.conditions import oldest_ready_ages

    ages = GaugeMetricFamily("fleet_queue_oldest_ready_seconds",
                             "Seconds the oldest ready message of a queue has waited for a worker (0: none ready).",
                             labels=["queue"])
    found = oldest_ready_ages()
    for depth in queue_depths(dramatiq.get_broker()):
        ages.add_metric([depth.queue], round(found.get(depth.queue, 0.0), 3))
    return [ages]


def alert_gauges() -> list:
    from actors.alerts import load_rules
    from actors.alerts.operations import firing

    gauge = GaugeMetricFamily("fleet_alerts_firing", "Subjects of a Fleet alert rule firing now.",
                              labels=["rule", "severity"])
    counts = {(rule.name, rule.severity): 0 for rule in load_rules().enabled}  # a series for each rule, 0 too
    for row in firing():
        counts[(row.rule, row.severity)] = counts.get((row.rule, row.severity), 0) + 1
    for (rule, severity), n in sorted(counts.items()):
        gauge.add_metric([rule, severity], n)
    return [gauge]


def breaker_gauges() -> list:
    breakers = GaugeMetricFamily("fleet_breaker_open", "1 while a service's circuit breaker is open.",
                                 labels=["service"])
    for service, state in states().items():
        breakers.add_metric([service], 1 if state == "open" else 0)
    return [breakers]


def joblog_counters() -> list:
    """What the JobLog writers' full buffers could not keep (they count it in Redis)."""
    client = state_redis()
    dropped = int(client.get("fleet:joblog:dropped") or 0) if client is not None else 0
    return [CounterMetricFamily("fleet_joblog_dropped", "Attempts that got no JobLog row (writer buffer full).",
                                value=dropped)]


def openai_gauges() -> list:
    figures = ai_status()
    used = GaugeMetricFamily("fleet_openai_budget_used", "OpenAI requests and tokens in the last minute.", labels=["limit"])
    limit = GaugeMetricFamily("fleet_openai_budget_limit", "The OpenAI limits in force (0 = none announced).",
                              labels=["limit", "source"])
    for name in ("requests", "tokens"):
        part = figures["budget"][name]
        used.add_metric([name], part["used"])
        limit.add_metric([name, part["source"]], part["limit"])
    events = GaugeMetricFamily("fleet_openai_events_last_hour", "OpenAI 429s and budget deferrals in the last hour.",
                               labels=["event"])
    events.add_metric(["rate_limited"], figures["last_hour"]["rate_limited"])
    events.add_metric(["deferred"], figures["last_hour"]["deferred"])
    return [used, limit, events,
            GaugeMetricFamily("fleet_openai_spend_usd_today", "AI spend today (FLEET_TIMEZONE).", value=figures["spend"]["usd"]),
            GaugeMetricFamily("fleet_openai_daily_cap_usd", "FLEET_OPENAI_DAILY_USD (0 = none).",
                              value=figures["spend"]["cap_usd"]),
            GaugeMetricFamily("fleet_openai_backlog_calls", "Calls the waiting AI work will make.",
                              value=figures["backlog"]["calls"])]


# Each part reads one thing; a part that fails is reported, the others still are.
GAUGES = {"queues": queue_gauges, "queue_age": queue_age_gauges, "breakers": breaker_gauges,
          "joblog": joblog_counters, "alerts": alert_gauges, "openai": openai_gauges}


class GaugeCollector:
    def collect(self):
        errors = GaugeMetricFamily("fleet_scrape_error", "1 when a part of this scrape could not be read.",
                                   labels=["part"])
        for part, read in GAUGES.items():
            try:
                yield from cached(f"metrics:{part}", CACHE_SECONDS, read)
                errors.add_metric([part], 0)
            except Exception:
                log.warning("/metrics could not read %s", part, exc_info=True)
                errors.add_metric([part], 1)
        yield errors


blueprint.before_request(metrics_login)


@blueprint.route("/metrics")
def metrics():
    settings = current_app.config["FLEET_SETTINGS"]
    registry = CollectorRegistry()
    settings.metrics_dir.mkdir(parents=True, exist_ok=True)
    MultiProcessCollector(registry, path=str(settings.metrics_dir))
    registry.register(GaugeCollector())
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
