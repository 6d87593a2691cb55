"""Dead letters: Dramatiq messages that failed for good; filter, page, look at one (with the
tracebacks of its attempts from the JobLog), requeue or delete the selected ones, one, or all
that match the filter. A requeue of letters with a permanent error code asks first."""
from __future__ import annotations

import json
from collections import Counter

import dramatiq
from flask import abort, flash, redirect, request
from flask_admin import BaseView, expose
from flask_admin.actions import ActionsMixin, action
from flask_wtf import FlaskForm
from wtforms import HiddenField

from admin import audit_trail
from admin.access import PanelAccess, is_admin
from admin.views import confirm
from admin.views.base import as_id
from core import dead_letters as dl
from core.errors import FleetError
from core.redact import redact
from db.models.jobs import JobLog

PAGE = 50
SEARCHED = 5_000  # newest dead letters a filter looks through
FILTERS = ("queue", "actor", "error_code")


def _show_args(letter: dl.DeadLetter) -> str:
    if letter.raw is not None:
        return redact(f"raw: {letter.raw[:200]}" + ("…" if len(letter.raw) > 200 else ""))
    text = json.dumps(list(letter.args), default=str)
    return redact(text + (" " + json.dumps(letter.kwargs, default=str) if letter.kwargs else ""))


def _wanted() -> dict[str, str]:
    """The list's filter from the query string: queue, actor, error code (each exact)."""
    return {k: request.args.get(k, "").strip()[:200] for k in FILTERS if request.args.get(k, "").strip()}


def _codes(letters) -> Counter:
    return confirm.permanent(Counter(d.error_code for d in letters).items())


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

    def _back(self):
        """The list as the operator left it: the same filter (a page may have emptied)."""
        return self.get_url(".index", **_wanted())

    @expose("/")
    def index(self):
        broker = dramatiq.get_broker()
        wanted = _wanted()
        page = min(as_id(request.args.get("page", "")) or 1, SEARCHED // PAGE + 1)
        try:
            total = dl.count_dead_letters(broker)
            newest = SEARCHED if wanted else min(SEARCHED, page * PAGE)
            letters = dl.matching(broker, wanted, newest)
            choices = {k: sorted({getattr(d, k) or "" for d in letters} - {""}) for k in FILTERS}
            matched = len(letters) if wanted else total
            permanent = _codes(letters if wanted or total <= len(letters) else dl.matching(broker, {}, SEARCHED))
            error = None
        except FleetError as exc:
            letters, total, matched, permanent, choices, error = [], 0, 0, Counter(), {k: [] for k in FILTERS}, str(exc)
        shown = letters[(page - 1) * PAGE: page * PAGE]
        last_page = max(1, -(-min(matched, SEARCHED) // PAGE))
        actions, confirmations = self.get_actions_list()
        return self.render("dead_letters.html", letters=shown, total=total, matched=matched, error=error,
                           page=page, last_page=last_page, page_size=PAGE, wanted=wanted, choices=choices,
                           searched=SEARCHED, warning=confirm.warning(permanent),
                           actions=actions, actions_confirmation=confirmations, action_form=self.action_form(),
                           return_url=self.get_url(".index", **wanted, **({"page": page} if page > 1 else {})),
                           show_args=_show_args)

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
                           can_act=is_admin(), warning=confirm.warning(_codes([letter])))

    @expose("/action/", methods=("POST",))
    def action_view(self):
        # back to the form's `url` (the list with its filter and page), else to the list
        return self.handle_action(return_view=None if request.form.get("url") else "index")

    def _apply(self, verb: str, operation, ids, scope: str | None = None) -> None:
        """`operation` on `ids` (None: all), flashed and audited; `scope` names a filter the ids came from."""
        try:
            done, missing = operation(dramatiq.get_broker(), ids)
        except FleetError as exc:
            flash(str(exc), "error")
            return
        audit_trail.record(f"dead_letters.{'requeue' if verb == 'Requeued' else 'delete'}",
                           scope or ("all" if ids is None else "ids=" + ",".join(ids)), done)
        flash(f"{verb} {done} dead letter(s).", "success")
        if missing:
            flash(f"{len(missing)} were gone already (requeued or deleted meanwhile).", "warning")

    def _requeue(self, ids, scope: str | None = None) -> None:
        def requeue(broker, ids):
            result = dl.requeue(broker, ids)
            if result.in_flight:
                flash(f"{result.in_flight} dropped: the same job is queued or running already.", "info")
            if result.invalid:
                flash(f"{result.invalid} are not valid messages and cannot be sent again; delete them.", "warning")
            return result.requeued, result.missing

        self._apply("Requeued", requeue, ids, scope)

    def _ask_first(self, letters, question: str, fields=()):
        """The confirm page when some of `letters` died of a permanent code and the operator
        has not confirmed yet; else None."""
        permanent = _codes(letters)
        if permanent and not confirm.confirmed():
            return confirm.ask(self, permanent, question=question, action=request.full_path.rstrip("?"), back=self._back(),
                               fields=fields)
        return None

    @action("requeue", "Requeue", "Send the selected messages again with a fresh retry budget?")
    def action_requeue(self, ids):
        ids = [i[:200] for i in ids]
        chosen = set(ids)
        try:
            letters = [d for d in dl.list_dead_letters(dramatiq.get_broker(), SEARCHED) if d.message_id in chosen]
        except FleetError as exc:
            flash(str(exc), "error")
            return None
        fields = [("action", "requeue"), ("url", request.form.get("url", "")), *(("rowid", i) for i in ids)]
        asked = self._ask_first(letters, f"Requeue the {len(ids)} selected dead letter(s)?", fields)
        if asked is not None:
            return asked
        self._requeue(ids)
        return None

    @action("delete", "Delete", "Delete the selected messages for good?")
    def action_delete(self, ids):
        self._apply("Deleted", dl.delete, [i[:200] for i in ids])

    def _matching(self):
        """(ids to act on, the letters they are): None for every dead letter when no filter is set."""
        wanted = _wanted()
        letters = dl.matching(dramatiq.get_broker(), wanted, SEARCHED)
        return ([d.message_id for d in letters] if wanted else None), letters

    @expose("/requeue-all/", methods=("POST",))
    def requeue_all(self):
        """Requeue every dead letter that matches the list's filter (in the query string)."""
        try:
            ids, letters = self._matching()
        except FleetError as exc:
            flash(str(exc), "error")
            return redirect(self._back())
        if ids == []:
            flash("No dead letters match the filter; nothing to requeue.", "warning")
            return redirect(self._back())
        asked = self._ask_first(letters, f"Requeue the {len(letters) if ids else 'all'} matching dead letter(s)?")
        if asked is not None:
            return asked
        self._requeue(ids, audit_trail.filter_text(_wanted()))
        return redirect(self._back())

    @expose("/delete-all/", methods=("POST",))
    def delete_all(self):
        """Delete every dead letter that matches the list's filter (in the query string)."""
        try:
            ids, _ = self._matching()
        except FleetError as exc:
            flash(str(exc), "error")
            return redirect(self._back())
        if ids == []:
            flash("No dead letters match the filter; nothing to delete.", "warning")
        else:
            self._apply("Deleted", dl.delete, ids, audit_trail.filter_text(_wanted()))
        return redirect(self._back())

    @expose("/<message_id>/requeue/", methods=("POST",))
    def requeue_one(self, message_id: str):
        try:
            letter = dl.find_dead_letter(dramatiq.get_broker(), message_id[:200])
        except FleetError as exc:
            flash(str(exc), "error")
            return redirect(self._back())
        asked = self._ask_first([letter] if letter else [], "Requeue this dead letter?")
        if asked is not None:
            return asked
        self._requeue([message_id[:200]])
        return redirect(self._back())

    @expose("/<message_id>/delete/", methods=("POST",))
    def delete_one(self, message_id: str):
        self._apply("Deleted", dl.delete, [message_id[:200]])
        return redirect(self._back())
