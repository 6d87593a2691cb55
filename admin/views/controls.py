"""The operator's controls (admin only, each confirmed in the page and audited): pause or resume
a queue, cancel a queued or delayed job, reset or trip a breaker. Forms on the dashboard and on a
job's details post here; no page of its own, so no menu entry."""
from __future__ import annotations

import dramatiq
from flask import abort, flash, g, redirect, request, url_for
from flask_admin import BaseView, expose
from flask_login import current_user

from actors import controls
from admin import audit_trail
from admin.access import PanelAccess, is_admin
from core import breakers
from core.errors import FleetError


def _back():
    """Where the form came from (a page of the panel), else the dashboard."""
    target = request.form.get("next", "")
    if target.startswith("/admin/") and not target.startswith("//") and "\\" not in target:
        return redirect(target)
    return redirect(url_for("admin.index"))


class ControlsView(PanelAccess, BaseView):
    def is_visible(self) -> bool:
        return False

    @expose("/")
    def index(self):
        return redirect(url_for("admin.index"))

    def _act(self, action: str, target: str, run) -> None:
        if not is_admin():
            abort(403)
        g.audited = True  # a refusal or a no-op changed nothing: no audit row (admin.audit_trail)
        try:
            message = run()
        except FleetError as exc:
            flash(str(exc), "error")
            return
        if message is None:
            return
        audit_trail.record(action, target=target, rows=1)
        flash(message, "success")

    @expose("/queues/<queue>/pause", methods=("POST",))
    def pause(self, queue: str):
        def run():
            if controls.pause_queue(dramatiq.get_broker(), queue, current_user.email):
                return f"Paused queue {queue}: workers stop fetching from it within a second."
            flash(f"Queue {queue} was paused already.", "info")
            return None

        self._act("queues.pause", queue, run)
        return _back()

    @expose("/queues/<queue>/resume", methods=("POST",))
    def resume(self, queue: str):
        def run():
            if controls.resume_queue(dramatiq.get_broker(), queue):
                return f"Resumed queue {queue}."
            flash(f"Queue {queue} was not paused.", "info")
            return None

        self._act("queues.resume", queue, run)
        return _back()

    @expose("/jobs/cancel", methods=("POST",))
    def cancel(self):
        message_id = request.form.get("message_id", "").strip()[:200]

        def run():
            result = controls.cancel_job(dramatiq.get_broker(), message_id, current_user.email)
            held = " A worker held it for its time and drops it then." if result.held else ""
            return f"Cancelled {result.message.actor_name} job {message_id}.{held}"

        self._act("jobs.cancel", message_id, run)
        return _back()

    @expose("/breakers/<service>/<verb>", methods=("POST",))
    def breaker(self, service: str, verb: str):
        operations = {"reset": (breakers.reset, "closed"), "trip": (breakers.trip, "open")}
        if verb not in operations:
            abort(404)
        operation, after = operations[verb]
        self._act(f"breakers.{verb}", service, lambda: f"Breaker {service}: {operation(service)} → {after}.")
        return _back()
