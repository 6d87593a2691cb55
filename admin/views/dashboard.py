"""The dashboard at /admin: the last 24 hours of jobs, queues, workers, breakers, scheduler."""
from __future__ import annotations

import logging
from datetime import timedelta

import dramatiq
from flask import current_app
from flask_admin import AdminIndexView, expose

from actors.series import overview as series_overview
from admin.access import PanelAccess
from admin.stats import counts_by_status, hourly
from core.breakers import states
from core.queues import live_workers, queue_depths
from core.state import state_redis
from db.models import utcnow

LEADER_KEY = "fleet:scheduler:leader"
log = logging.getLogger("fleet.panel")


def scheduler_leader() -> str | None:
    client = state_redis()
    value = client.get(LEADER_KEY) if client is not None else None
    return value.decode(errors="replace") if value else None


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
        hours = hourly(24)
        errors: list[str] = []
        return self.render(
            "dashboard.html",
            statuses=counts_by_status(utcnow() - timedelta(hours=24)),
            hours=hours,
            peak=max([h.succeeded + h.failed for h in hours] + [1]),
            queues=_read(errors, "queues", lambda: queue_depths(broker), []),
            workers=_read(errors, "workers", lambda: live_workers(broker, settings.heartbeat_timeout)),
            heartbeat_timeout=settings.heartbeat_timeout,
            breakers=_read(errors, "breakers", states, {}),
            leader=_read(errors, "scheduler leader", scheduler_leader),
            series=_read(errors, "series data", series_overview),
            errors=errors,
        )
