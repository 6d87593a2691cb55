"""Dead letters: Dramatiq messages that failed for good; filter, look at one (with the
tracebacks of its attempts from the JobLog), requeue or delete them."""
from __future__ import annotations

import json

import dramatiq
from flask import abort, flash, redirect, request
from flask_admin import BaseView, expose
from flask_admin.actions import ActionsMixin, action
from flask_wtf import FlaskForm
from wtforms import HiddenField

from admin import audit_trail
from admin.access import PanelAccess, is_admin
from core import dead_letters as dl
from core.errors import FleetError
from core.redact import redact
from db.models.jobs import JobLog

SHOWN = 200
SEARCHED = 5_000  # newest dead letters a filter looks through
FILTERS = ("queue", "actor", "error_code")


def _show_args(letter: dl.DeadLetter) -> str:
    if letter.raw is not None:
        return redact(f"raw: {letter.raw[:200]}" + ("…" if len(letter.raw) > 200 else ""))
    text = json.dumps(list(letter.args), default=str)
    return redact(text + (" " + json.dumps(letter.kwargs, default=str) if letter.kwargs else ""))


class ActionForm(FlaskForm):
    """What Flask-Admin's actions.html posts: the action, where to go back, the CSRF token."""

    action = HiddenField()
    url = HiddenField()


class DeadLettersView(PanelAccess, ActionsMixin, BaseView):
    def __init__(self, *args, **kwargs):
        BaseView.__init__(self, *args, **kwargs)  # ActionsMixin.__init__ takes no arguments
        self.init_actions()

    # what ActionsMixin.handle_action expects of a model view
    def action_form(self):
        return ActionForm()

    def validate_form(self, form) -> bool:
        return form.validate_on_submit()

    def is_action_allowed(self, name: str) -> bool:
        return is_admin()

    @expose("/")
    def index(self):
        broker = dramatiq.get_broker()
        wanted = {k: request.args.get(k, "").strip()[:200] for k in FILTERS if request.args.get(k, "").strip()}
        try:
            total = dl.count_dead_letters(broker)
            letters = dl.list_dead_letters(broker, limit=SEARCHED if wanted else SHOWN)
            error = None
        except FleetError as exc:
            letters, total, error = [], 0, str(exc)
        choices = {k: sorted({getattr(d, k) or "" for d in letters} - {""}) for k in FILTERS}
        if wanted:
            letters = [d for d in letters if all((getattr(d, k) or "") == v for k, v in wanted.items())][:SHOWN]
        actions, confirmations = self.get_actions_list()
        return self.render("dead_letters.html", letters=letters, total=total, error=error, shown=SHOWN,
                           wanted=wanted, choices=choices, searched=SEARCHED,
                           actions=actions, actions_confirmation=confirmations,
                           action_form=self.action_form(), return_url=self.get_url(".index"), show_args=_show_args)

    @expose("/<message_id>/")
    def details(self, message_id: str):
        try:
            letter = dl.find_dead_letter(dramatiq.get_broker(), message_id[:200])
        except FleetError as exc:
            flash(str(exc), "error")
            return redirect(self.get_url(".index"))
        if letter is None:
            abort(404)
        attempts = list(JobLog.select().where(JobLog.message_id == letter.message_id).order_by(JobLog.id))
        return self.render("dead_letter.html", letter=letter, attempts=attempts, show_args=_show_args,
                           can_act=is_admin())

    @expose("/action/", methods=("POST",))
    def action_view(self):
        return self.handle_action(return_view="index")

    def _apply(self, verb: str, operation, ids) -> None:
        try:
            done, missing = operation(dramatiq.get_broker(), ids)
        except FleetError as exc:
            flash(str(exc), "error")
            return
        audit_trail.record(f"dead_letters.{'requeue' if verb == 'Requeued' else 'delete'}",
                           "all" if ids is None else "ids=" + ",".join(ids), done)
        flash(f"{verb} {done} dead letter(s).", "success")
        if missing:
            flash(f"{len(missing)} were gone already (requeued or deleted meanwhile).", "warning")

    def _requeue(self, ids) -> None:
        def requeue(broker, ids):
            result = dl.requeue(broker, ids)
            if result.in_flight:
                flash(f"{result.in_flight} dropped: the same job is queued or running already.", "info")
            if result.invalid:
                flash(f"{result.invalid} are not valid messages and cannot be sent again; delete them.", "warning")
            return result.requeued, result.missing

        self._apply("Requeued", requeue, ids)

    @action("requeue", "Requeue", "Send the selected messages again with a fresh retry budget?")
    def action_requeue(self, ids):
        self._requeue(list(ids))

    @action("delete", "Delete", "Delete the selected messages for good?")
    def action_delete(self, ids):
        self._apply("Deleted", dl.delete, list(ids))

    @expose("/requeue-all/", methods=("POST",))
    def requeue_all(self):
        self._requeue(None)
        return redirect(self.get_url(".index"))

    @expose("/delete-all/", methods=("POST",))
    def delete_all(self):
        self._apply("Deleted", dl.delete, None)
        return redirect(self.get_url(".index"))

    @expose("/<message_id>/requeue/", methods=("POST",))
    def requeue_one(self, message_id: str):
        self._requeue([message_id[:200]])
        return redirect(self.get_url(".index"))

    @expose("/<message_id>/delete/", methods=("POST",))
    def delete_one(self, message_id: str):
        self._apply("Deleted", dl.delete, [message_id[:200]])
        return redirect(self.get_url(".index"))
