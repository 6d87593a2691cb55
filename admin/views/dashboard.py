"""The dashboard at /admin: the last 24 hours of jobs, queues, workers, breakers, scheduler.

Cheap however big the fleet: one grouped JobLog query (cached a few seconds), four counts a
known queue, the workers' presence records, every process's clock offset (core.clock); it refreshes itself while it is visible.
"""
from __future__ import annotations

import logging

import dramatiq
from flask import current_app, flash, redirect, request
from flask_admin import AdminIndexView, expose

from actors.ai import status as ai_status
from actors.middleware.presence import WorkerNotLost, forget_worker, live_workers, lost_workers
from actors.schedule import leader as scheduler_leader
from actors.series import overview as series_overview
from admin.access import PanelAccess, is_admin
from admin.cache import cached
from admin.stats import chart, last_day
from core import clock
from core.breakers import held_back, states
from core.broker import REDIS_NAMESPACE
from core.pauses import paused_since
from core.queues import NO_MANAGEMENT, queue_depths
from core.state import state_redis

CACHE_SECONDS = 5
log = logging.getLogger("fleet.panel")


def _workers(timeout: float):
    client = state_redis()
    return live_workers(client, timeout) if client is not None else None


def _lost(timeout: float):
    client = state_redis()
    return lost_workers(client, timeout, REDIS_NAMESPACE) if client is not None else []


def _clocks():
    client = state_redis()
    if client is None:
        return None
    clock.CLOCK.keep_measured(client, "web")
    return clock.process_clocks(client)


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
        bars, bar = cached("dashboard:chart", CACHE_SECONDS, lambda: chart(day))
        errors: list[str] = []
        workers = _read(errors, "workers", lambda: _workers(settings.heartbeat_timeout), [])
        paused = _read(errors, "paused queues", paused_since, {})
        also = sorted({q for w in workers or () for q in w.queues} | set(paused))
        return self.render(
            "dashboard.html",
            statuses=day.statuses,
            hours=bars,
            bar=bar,
            peak=max([h.succeeded + h.failed for h in bars] + [1]),
            queues=_read(errors, "queues", lambda: queue_depths(broker, also), []),
            paused=paused,
            can_control=is_admin(),
            workers=workers,
            lost=_read(errors, "lost workers", lambda: _lost(settings.heartbeat_timeout), []),
            heartbeat_timeout=settings.heartbeat_timeout,
            breakers=_read(errors, "breakers", states, {}),
            held_back=_read(errors, "hosts held back", held_back, []),
            no_management=NO_MANAGEMENT,
            leader=_read(errors, "scheduler leader", scheduler_leader),
            clocks=_read(errors, "clocks", _clocks, []),
            max_offset=clock.MAX_OFFSET,
            series=_read(errors, "series data", series_overview),
            ai=_read(errors, "OpenAI budget", lambda: cached("dashboard:ai", CACHE_SECONDS, ai_status)),
            errors=errors,
        )

    @expose("/workers/forget/", methods=("POST",))
    def forget_worker(self):
        """Stop listing a lost worker (admins; the app's guard and CSRF check come first)."""
        worker_id = request.form.get("worker", "")
        client = state_redis()
        try:
            if client is None:
                raise WorkerNotLost("workers are not known without a state Redis")
            forgotten = forget_worker(client, worker_id, current_app.config["FLEET_SETTINGS"].heartbeat_timeout)
        except WorkerNotLost as exc:
            flash(str(exc), "error")
        else:
            flash(f"Forgot lost worker {forgotten.host} (pid {forgotten.pid}).", "success")
        return redirect(self.get_url(".index"))
