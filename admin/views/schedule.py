"""Schedule: each entry with its next and last run, the schedulers and their heartbeats, run
now / pause / resume for admins, and an entry's ledger."""
from __future__ import annotations

import logging

from flask import abort, flash, redirect, request
from flask_admin import BaseView, expose
from flask_login import current_user
from redis import RedisError

import actors.all  # noqa: F401  (every domain registers its tasks before the file is checked)
from actors import schedule as sched
from admin.access import PanelAccess, is_admin
from core.errors import FleetError

log = logging.getLogger("fleet.panel")

HISTORY = 100
STATE_CLASSES = {"succeeded": "success", "failed": "danger", "missed": "danger", "skipped": "warning",
                 "running": "info", "emitted": "primary", "claimed": "secondary"}


def _schedule():
    """(the schedule, None) or (None, the problems of an invalid file)."""
    try:
        return sched.load_schedule(), None
    except sched.ScheduleError as exc:
        return None, exc.problems


def _schedulers():
    try:
        return sched.schedulers(), None
    except RedisError as exc:
        log.warning("schedule page could not read the schedulers", exc_info=True)
        return [], f"{type(exc).__name__}: {exc}"


class ScheduleView(PanelAccess, BaseView):
    @expose("/")
    def index(self):
        schedule, problems = _schedule()
        schedulers, redis_error = _schedulers()
        rows = sched.entry_rows(schedule) if schedule is not None else []
        return self.render("schedule.html", schedule=schedule, problems=problems, rows=rows,
                           schedulers=schedulers, redis_error=redis_error, can_act=is_admin(),
                           state_text=sched.state_text, state_class=STATE_CLASSES)

    @expose("/history/")
    def history(self):
        name = request.args.get("entry", "")
        schedule, problems = _schedule()
        entry = schedule.entries.get(name) if schedule is not None else None
        runs = sched.history(name, HISTORY)
        if entry is None and not runs:
            abort(404)
        counts = {state: sum(r.state == state for r in runs) for state in ("succeeded", "failed", "skipped", "missed")}
        return self.render("schedule_history.html", name=name, entry=entry, runs=runs, counts=counts,
                           paused=sched.pauses().get(name),
                           tz=entry.timezone if entry else "UTC", shown=HISTORY, can_act=is_admin(),
                           state_text=sched.state_text, state_class=STATE_CLASSES)

    @expose("/action/", methods=("POST",))
    def action(self):
        name, action = request.form.get("entry", ""), request.form.get("action", "")
        back = request.form.get("back") == "history"
        schedule, problems = _schedule()
        if schedule is None:
            flash("The schedule file is invalid; fix it first.", "error")
        elif name not in schedule.entries:
            flash(f"No schedule entry named {name}.", "error")
        elif action == "run":
            self._run_now(schedule.entries[name])
        elif action in ("pause", "resume"):
            if not sched.set_paused(name, action == "pause", current_user.email):
                flash(f"{name} is {'paused already' if action == 'pause' else 'not paused'}.", "info")
            else:
                flash(f"{'Paused' if action == 'pause' else 'Resumed'} {name}"
                      + (": every scheduler skips its slots until it is resumed." if action == "pause" else "."),
                      "success")
        else:
            flash(f"Unknown action {action!r}.", "error")
        if back and schedule is not None and name in schedule.entries:
            return redirect(self.get_url(".history", entry=name))
        return redirect(self.get_url(".index"))

    @staticmethod
    def _run_now(entry: sched.Entry) -> None:
        try:
            run = sched.run_now(entry, current_user.email)
        except (FleetError, RedisError) as exc:
            flash(f"{entry.name} not run: {exc}", "error")
            return
        if run.state == "emitted":
            flash(f"Emitted {entry.name} now (run #{run.id}).", "success")
        else:
            flash(f"{entry.name} not run: {run.detail}.", "warning")
