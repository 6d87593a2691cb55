"""Dead letters: Dramatiq messages that failed for good; requeue or delete them."""
from __future__ import annotations

import json

import dramatiq
from flask import flash, redirect
from flask_admin import BaseView, expose
from flask_admin.actions import ActionsMixin, action
from flask_wtf import FlaskForm
from wtforms import HiddenField

from admin.access import PanelAccess, is_admin
from core import dead_letters as dl
from core.errors import FleetError
from core.redact import redact

SHOWN = 200


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
        try:
            letters, total, error = dl.list_dead_letters(broker, limit=SHOWN), dl.count_dead_letters(broker), None
        except FleetError as exc:
            letters, total, error = [], 0, str(exc)
        actions, confirmations = self.get_actions_list()
        return self.render("dead_letters.html", letters=letters, total=total, error=error, shown=SHOWN,
                           actions=actions, actions_confirmation=confirmations,
                           action_form=self.action_form(), return_url=self.get_url(".index"), show_args=_show_args)

    @expose("/action/", methods=("POST",))
    def action_view(self):
        return self.handle_action(return_view="index")

    def _apply(self, verb: str, operation, ids) -> None:
        try:
            done, missing = operation(dramatiq.get_broker(), ids)
        except FleetError as exc:
            flash(str(exc), "error")
            return
        flash(f"{verb} {done} dead letter(s).", "success")
        if missing:
            flash(f"{len(missing)} were gone already (requeued or deleted meanwhile).", "warning")

    def _requeue(self, ids) -> None:
        import actors.all  # noqa: F401  (a requeue runs every middleware, which looks up the actor)

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
