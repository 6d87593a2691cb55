"""Alerts: what fires now (most severe first), silences with who and until when, the history
of notifications with what each channel answered; silence and unsilence for admins."""
from __future__ import annotations

from flask import flash, redirect, request
from flask_admin import BaseView, expose
from flask_login import current_user

from actors.alerts import operations as ops
from actors.alerts.channels import load_channels
from actors.alerts.rules import RulesError, duration, load_rules
from admin.access import PanelAccess, is_admin
from admin.cache import cached
from core import formats
from core.settings import SettingsError
from db.models import utcnow

HISTORY = 100
SEVERITY_CLASSES = {"critical": "danger", "warning": "warning", "info": "info"}
HEADER_SECONDS = 5


def firing_now() -> list:
    """The firing alerts for the header of every page (read once every few seconds)."""
    def read():
        try:
            return [{"rule": r.rule, "subject": r.subject, "severity": r.severity, "summary": r.summary}
                    for r in ops.firing()]
        except Exception:  # the header never breaks a page; the Health page says what is wrong
            return []
    return cached("alerts-firing", HEADER_SECONDS, read)


class AlertsView(PanelAccess, BaseView):
    @expose("/")
    def index(self):
        try:
            rules, problems = load_rules(), None
        except RulesError as exc:
            rules, problems = None, exc.problems
        channels = []
        try:
            channels = load_channels().names
        except SettingsError as exc:
            problems = [*(problems or []), f"alert channels: {exc}"]
        rule = request.args.get("rule") or None
        states = ops.states()
        events = ops.history(HISTORY, rule)
        return self.render("alerts.html", rules=rules, problems=problems, rule=rule, channels=channels,
                           firing=[s for s in states if s.state == "firing"],
                           events=events, deliveries=ops.deliveries([e.id for e in events]),
                           silences=ops.silences(), active={s.rule for s in ops.silences(include_past=0)},
                           failing=ops.failing_channels(), can_act=is_admin(), now=utcnow(),
                           evaluated=ops.seconds_since_evaluation(), since=ops.since_text,
                           words=formats.roughly, severity_class=SEVERITY_CLASSES)

    @expose("/silence/", methods=("POST",))
    def silence(self):
        if not is_admin():
            flash("Only admins silence alerts.", "error")
            return redirect(self.get_url(".index"))
        rule, action = request.form.get("rule", ""), request.form.get("action", "silence")
        if action == "unsilence":
            lifted = ops.unsilence(rule, current_user.email)
            flash(f"{rule}: silence lifted." if lifted else f"{rule} was not silenced.", "success" if lifted else "info")
            return redirect(self.get_url(".index"))
        try:
            seconds = duration("for", request.form.get("for", "").strip())
            silence = ops.silence(load_rules(), rule, seconds, current_user.email, request.form.get("reason"))
        except (ValueError, RulesError, Exception) as exc:
            flash(f"{rule} not silenced: {exc}", "error")
            return redirect(self.get_url(".index"))
        flash(f"{rule} silenced for {formats.roughly(seconds)}, until {silence.until:%Y-%m-%d %H:%M} UTC.", "success")
        return redirect(self.get_url(".index"))
