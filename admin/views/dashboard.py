"""The dashboard at /admin: the last 24 hours of jobs, queues, workers, breakers, scheduler.

Cheap however big the fleet: one grouped JobLog query (cached a few seconds), four counts a
known queue, the workers' presence records; it refreshes itself while it is visible.
"""
from __future__ import annotations

import logging

import dramatiq
from flask import current_app
from flask_admin import AdminIndexView, expose

from actors.ai import status as ai_status
from actors.middleware.presence import live_workers
from actors.schedule import leader as scheduler_leader
from actors.series import overview as series_overview
from admin.access import PanelAccess, is_admin
from admin.cache import cached
from admin.stats import last_day
from core.breakers import states
from core.pauses import paused_since
from core.queues import queue_depths
from core.state import state_redis

CACHE_SECONDS = 5
log = logging.getLogger("fleet.panel")


def _workers(timeout: float):
    client = state_redis()
    return live_workers(client, timeout) if client is not None else None


def _read(errors: list[str], what: str, read, default=None):
    """The dashboard still shows the rest when the broker or the state Redis does not answer."""
    try:
        return read()
    except Exception as exc:
        log.warning("dashboard could not read %s", what, exc_info=True)
        errors.append(f"{what}: {type(exc).__name__}: {exc}")
        return default


class DashboardView(PanelAccess, AdminIndexView):
    @expose("/")
    def index(self):
        settings = current_app.config["FLEET_SETTINGS"]
        broker = dramatiq.get_broker()
        day = cached("dashboard:day", CACHE_SECONDS, last_day)
        errors: list[str] = []
        workers = _read(errors, "workers", lambda: _workers(settings.heartbeat_timeout), [])
        paused = _read(errors, "paused queues", paused_since, {})
        also = sorted({q for w in workers or () for q in w.queues} | set(paused))
        return self.render(
            "dashboard.html",
            statuses=day.statuses,
            hours=day.hours,
            peak=max([h.succeeded + h.failed for h in day.hours] + [1]),
            queues=_read(errors, "queues", lambda: queue_depths(broker, also), []),
            paused=paused,
            can_control=is_admin(),
            workers=workers,
            heartbeat_timeout=settings.heartbeat_timeout,
            breakers=_read(errors, "breakers", states, {}),
            leader=_read(errors, "scheduler leader", scheduler_leader),
            series=_read(errors, "series data", series_overview),
            ai=_read(errors, "OpenAI budget", lambda: cached("dashboard:ai", CACHE_SECONDS, ai_status)),
            errors=errors,
        )
