"""Failed plans: the `failed` days of workout plans, with retry and reset in bulk."""
from __future__ import annotations

from collections import Counter
from datetime import datetime

from flask import flash, redirect, request, url_for
from flask_admin import expose
from flask_admin.actions import action
from flask_admin.contrib.peewee import filters as f
from flask_admin.model import filters as base_filters
from flask_login import current_user
from markupsafe import Markup
from peewee import SQL, fn

from actors.workout_days import start_retry_days
from actors.workouts import (
    count_plans_with_pending_days,
    generate_pending,
    reset_days,
    retry_days,
    retry_estimate,
)
from actors.workouts_retry import count_matching, matching, start_retry
from admin.views import confirm
from admin.views.base import ReadOnlyModelView, as_id, cut, filter_spec, on_all_matching
from admin.views.job_links import jobs_url, plan_label, user_label
from admin.views.shown import when
from core.errors import CODES, FleetError
from db.models.workouts import Plan, User, WorkoutPlan

CODE_OPTIONS = [(code, code) for code in CODES]


class PlanFilter(f.BasePeeweeFilter):
    """A filter that is also a key of `actors.workouts_retry.matching`, so a background job can repeat it."""

    key = ""

    def __init__(self, name: str, options=None, data_type=None):
        super().__init__(WorkoutPlan.plan, name, options, data_type)  # a column of this model: no extra join

    def apply(self, query, value):
        return query.where(matching({self.key: self.spec_value(value)}))

    def spec_value(self, value):
        return value


class PlanIs(PlanFilter, base_filters.BaseIntFilter):
    key = "plan"

    def operation(self):
        return "equals"

    def validate(self, value) -> bool:
        return as_id(value) is not None  # a number past 64 bits would overflow the query


class UserIs(PlanIs):
    key = "user"


class CodeIs(PlanFilter):
    key = "error_code"

    def operation(self):
        return "equals"


class FailedAfter(PlanFilter, base_filters.BaseDateTimeFilter):
    key = "failed_after"

    def operation(self):
        return "after"

    def spec_value(self, value: datetime) -> str:
        return value.isoformat()


class FailedBefore(FailedAfter):
    key = "failed_before"

    def operation(self):
        return "before"


def _code(view, context, model, name):
    return Markup('<a href="{}">{}</a>').format(url_for("error_codes.index") + f"#{model.error_code}",
                                                model.error_code) if model.error_code else ""


def _plan(view, context, model, name):
    plan = model.plan
    return Markup('<a href="{}" title="Every job of this plan">{}</a>').format(
        jobs_url("plan", plan.id), cut(plan_label(plan), 40))


def _user(view, context, model, name):
    user = model.plan.user
    return Markup('<a href="{}" title="{} (the failed days of this user)">{}</a>').format(
        url_for(".index_view", flt0_user_equals=user.id), user_label(user), cut(user_label(user), 32))


def codes_of(where, by_user: bool = False) -> Counter:
    """The permanent error codes among the days `where` selects (failed days: the status is the
    caller's, since a second `status =` turns SQLite's planner to the status index), with their
    counts (one grouped query on the (error_code, status) index: only `by_user` joins the plans)."""
    permanent = [code for code, e in CODES.items() if not e.retryable]
    query = WorkoutPlan.select(WorkoutPlan.error_code, fn.COUNT(SQL("*")))
    rows = ((query.join(Plan) if by_user else query)
            .where(where & WorkoutPlan.error_code.in_(permanent))
            .group_by(WorkoutPlan.error_code).tuples())
    return confirm.permanent(rows)


class FailedPlansView(ReadOnlyModelView):
    list_template = "failed_plans_list.html"
    page_size = 50
    column_list = ["plan", "user", "day", "error_code", "sentence", "error_message", "updated_at"]
    column_details_list = ["id", "plan", "user", "day", "status", "attempts", "error_code", "sentence",
                           "error_message", "created_at", "updated_at"]
    column_labels = {"plan": "Plan", "user": "User", "error_code": "Error code", "sentence": "What it means",
                     "error_message": "Message", "updated_at": "Failed at (UTC)"}
    column_sortable_list = ["updated_at"]
    column_default_sort = ("updated_at", True)
    column_filters = [
        PlanIs("Plan"),
        UserIs("User"),
        CodeIs("Error code", options=CODE_OPTIONS),
        FailedAfter("Failed (UTC)"),
        FailedBefore("Failed (UTC)"),
    ]
    column_formatters = {
        "plan": _plan,
        "user": _user,
        "sentence": lambda v, c, m, n: CODES[m.error_code].sentence if m.error_code in CODES else "",
        "error_message": lambda v, c, m, n: Markup('<span title="{}">{}</span>').format(
            m.error_message or "", cut(m.error_message, 120)),
        "updated_at": lambda v, c, m, n: when(m.updated_at),
        "error_code": _code,
    }
    column_formatters_detail = {**column_formatters, "error_message": lambda v, c, m, n: m.error_message}

    def get_query(self):
        return (WorkoutPlan.select(WorkoutPlan.id, WorkoutPlan.plan, WorkoutPlan.day, WorkoutPlan.status,
                                   WorkoutPlan.attempts, WorkoutPlan.error_code, WorkoutPlan.error_message,
                                   WorkoutPlan.created_at, WorkoutPlan.updated_at, Plan.id, Plan.user, Plan.goal,
                                   Plan.days, User.id, User.name, User.email)
                .join(Plan).join(User).where(WorkoutPlan.status == "failed"))

    def get_one(self, id):
        row_id = as_id(id)
        return None if row_id is None else self.get_query().where(WorkoutPlan.id == row_id).first()

    # -- actions on the selected days ------------------------------------------------
    def _selected(self, ids) -> list[int]:
        """The selected day ids; ids that are not ones (text, past 64 bits) match no day."""
        return [i for i in (as_id(raw) for raw in ids) if i is not None]

    @action("retry", "Retry selected", "Set the selected days back to pending and generate them again?")
    def action_retry(self, ids):
        day_ids = self._selected(ids)
        permanent = codes_of(WorkoutPlan.id.in_(day_ids) & (WorkoutPlan.status == "failed"))
        if permanent and not confirm.confirmed():
            return confirm.ask(self, permanent, question=f"Retry the {len(day_ids)} selected day(s)?",
                               action=url_for(".action_view"), back=request.form.get("url") or url_for(".index_view"),
                               fields=[("action", "retry"), ("url", request.form.get("url", "")),
                                       *(("rowid", str(i)) for i in day_ids)])
        try:
            reset, plans, sent = retry_days(day_ids)
        except FleetError as exc:  # saved, the jobs wait in the outbox: the line says so
            flash(str(exc), "error")
            return
        message = f"Retrying {reset} day(s) of {plans} plan(s): dispatched {sent} generation job(s)"
        if plans - sent:
            message += f" ({plans - sent} already queued or running)"
        flash(message + ".", "success")

    @action("reset", "Reset selected", "Set the selected days back to pending without dispatching a job?")
    def action_reset(self, ids):
        reset = reset_days(self._selected(ids))
        flash(f"{reset} day(s) reset to pending; no job dispatched yet: use “Generate pending”.", "success")

    # -- "Generate pending" ------------------------------------------------------------
    @expose("/generate-pending/", methods=("POST",))
    def generate_pending(self):
        sent, in_flight = generate_pending()
        message = f"Dispatched {sent} generation job(s) for plans with pending days"
        flash(message + (f" ({in_flight} already queued or running)." if in_flight else "."), "success")
        return redirect(self.get_url(".index_view", **request.args))

    # -- "Retry all matching the filter" ---------------------------------------------
    def filter_spec(self) -> dict | None:
        """The filters of this request as an `actors.workouts_retry.matching` spec, or None."""
        return filter_spec(self)

    def render(self, template, **kwargs):
        if template == self.list_template and getattr(current_user, "is_admin", False):
            spec = self.filter_spec()  # what "Retry all matching the filter" would touch, shown before the click
            kwargs["matching"] = count_matching(spec) if spec is not None else None
            kwargs["estimate"] = retry_estimate(kwargs["matching"][0]) if kwargs["matching"] else ""
            kwargs["pending_plans"] = count_plans_with_pending_days()  # what "Generate pending" would dispatch
            kwargs["warning"] = confirm.warning(codes_of(matching(spec), "user" in spec)) if spec is not None else ""
        return super().render(template, **kwargs)

    @expose("/retry-matching/", methods=("POST",))
    def retry_matching(self):
        def start(spec: dict, plans: int):
            batch, plans = start_retry(spec, current_user.email)
            if batch is None:  # retried meanwhile
                return None
            flash(f"Retry of {plans} matching plans started.", "success")
            return redirect(url_for("batches.details", batch_id=batch.id))

        spec = self.filter_spec()
        permanent = codes_of(matching(spec), "user" in spec) if spec is not None else None
        if permanent and not confirm.confirmed():
            days, plans = count_matching(spec)
            return confirm.ask(self, permanent, question=f"Retry the {days} failed day(s) in {plans} plan(s) that "
                               "match the filter?", action=request.full_path.rstrip("?"),
                               back=self.get_url(".index_view", **request.args))
        return on_all_matching(self, ("retry", "retried"), "failed plans", lambda spec: count_matching(spec)[1], start)

    @expose("/retry-matching-economy/", methods=("POST",))
    def retry_matching_economy(self):
        """The matching failed days as one batch on the economy lane (OpenAI's Batch API)."""
        def start(spec: dict, days: int):
            batch, plans = start_retry_days(matching(spec), lane="economy", created_by=current_user.email)
            if batch is None:  # retried meanwhile
                return None
            flash(f"Economy retry of {batch.total} failed day(s) in {len(plans)} plan(s) started: OpenAI's Batch API "
                  "answers within 24 hours, at half the price.", "success")
            return redirect(url_for("batches.details", batch_id=batch.id))

        return on_all_matching(self, ("retry", "retried"), "failed plans", lambda spec: count_matching(spec)[0], start)
