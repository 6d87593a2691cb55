"""Job logs: every attempt of every job, newest first, with filters, search, details and CSV;
a failed job's details can run it again, and link to what the job worked on."""
from __future__ import annotations

import json

import dramatiq
from flask import flash, g, redirect, request, url_for
from flask_admin import expose
from flask_admin.contrib.peewee import filters as f
from markupsafe import Markup

from actors.controls import search_condition
from actors.jobs import retry_job
from admin import audit_trail
from admin.access import is_admin
from admin.stats import distinct_values
from admin.views import confirm, job_links
from admin.views.base import ReadOnlyModelView, as_id
from admin.views.shown import when
from core.errors import CODES, FleetError
from core.redact import redact
from db.models.jobs import JobLog

CODE_OPTIONS = [(code, code) for code in CODES]
STATUS_OPTIONS = [(s, s) for s in JobLog.STATUSES]
LIST_FIELDS = [JobLog.id, JobLog.created_at, JobLog.finished_at, JobLog.job_class, JobLog.message_id, JobLog.queue,
               JobLog.status, JobLog.attempt, JobLog.error_code, JobLog.message, JobLog.duration_seconds,
               JobLog.trace_id, JobLog.worker]


class LiveOptions:
    """Filter options read on every request (Flask-Admin caches a list at start-up)."""

    def __init__(self, load):
        self.load = load

    def __bool__(self) -> bool:
        return True

    def __iter__(self):
        return iter([(v, v) for v in self.load()])


def _actors():
    return distinct_values(JobLog, "job_class")


def _code(view, context, model, name):
    code = model.error_code
    if not code:
        return ""
    sentence = CODES[code].sentence if code in CODES else ""
    return Markup('<a href="{}#{}" title="{}">{}</a>').format(url_for("error_codes.index"), code, sentence, code)


def _short(text: str | None, keep: int):
    """A long id or name cut to `keep` characters, the whole on hover."""
    text = text or ""
    if len(text) <= keep:
        return text
    return Markup('<span title="{}">{}…</span>').format(text, text[: keep - 1])


def _status(view, context, model, name):
    return Markup('<span class="badge fleet-status fleet-status-{0}">{0}</span>').format(model.status)


def _trace(view, context, model, name):
    if not model.trace_id:
        return ""
    short = model.trace_id if len(model.trace_id) <= 9 else model.trace_id[:8] + "…"
    return Markup('<a class="fleet-id" href="{}" title="{} (every attempt of this trace)">{}</a>').format(
        url_for(".index_view", flt0_trace_id_equals=model.trace_id), model.trace_id, short)


def _message_id(view, context, model, name):
    short = model.message_id if len(model.message_id) <= 13 else model.message_id[:8] + "…"
    return Markup('<a class="fleet-id" href="{}" title="{} (every attempt of this message)">{}</a>').format(
        url_for(".index_view", flt0_message_id_equals=model.message_id), model.message_id, short)


def _pre(text: str | None):
    return Markup('<pre class="fleet-pre">{}</pre>').format(text) if text else ""


def _call(model) -> tuple[list, dict] | None:
    try:
        call = json.loads(model.args or "")
        return list(call["args"]), dict(call["kwargs"])
    except (ValueError, KeyError, TypeError):
        return None


def _args(view, context, model, name):
    if not model.args:
        return ""
    try:
        pretty = json.dumps(json.loads(model.args), indent=2, sort_keys=True)
    except ValueError:
        pretty = model.args
    return _pre(redact(pretty))


def _related(view, context, model, name):
    call = _call(model)
    links = job_links.related(model, *call) if call else []
    links.append(("Every attempt of this message", url_for(".index_view", flt0_message_id_equals=model.message_id)))
    return Markup(" · ").join(Markup('<a href="{}">{}</a>').format(url, label) for label, url in links)


def _redelivered_as(view, context, model, name):
    """An abandoned attempt's link to the attempt that took its message over."""
    if not model.redelivered_as:
        return ""
    row = JobLog.get_or_none((JobLog.message_id == model.message_id) & (JobLog.run_id == model.redelivered_as))
    if row is None:
        return model.redelivered_as
    return Markup('<a href="{}" id="redelivered-as">attempt {} ({}, {})</a>').format(
        url_for(".details_view", id=row.id), row.run_id, row.status, row.worker or "")


def _traceback(view, context, model, name):
    if model.status == "deferred":  # an expected wait (over budget, breaker open): no retry spent, nothing broke
        return "" if not model.traceback else "(an expected deferral: no retry was spent; the job runs again later)"
    return _pre(model.traceback)


class JobLogView(ReadOnlyModelView):
    details_template = "joblog_details.html"
    export_max_rows = 100_000
    can_export = True
    column_list = ["created_at", "job_class", "status", "attempt", "error_code", "message", "duration_seconds",
                   "message_id", "trace_id", "worker"]
    column_details_list = ["id", "related", "run_id", "created_at", "finished_at", "job_class", "queue", "message_id",
                           "status", "redelivered_as", "attempt", "error_code", "message", "duration_seconds",
                           "trace_id", "worker", "args", "traceback"]
    column_export_list = ["created_at", "finished_at", "job_class", "queue", "message_id", "status", "attempt",
                          "error_code", "message", "duration_seconds", "trace_id", "worker"]
    column_labels = {"created_at": "Time (UTC)", "job_class": "Actor", "duration_seconds": "Secs", "attempt": "Try",
                     "trace_id": "Trace id", "error_code": "Error code", "finished_at": "Finished (UTC)",
                     "message_id": "Message id", "related": "Related", "redelivered_as": "Redelivered as"}
    column_sortable_list = ["created_at"]  # sorting another column would sort the whole table
    column_default_sort = ("created_at", True)
    column_searchable_list = ["message"]
    column_filters = [
        f.FilterEqual(JobLog.job_class, "Actor", options=LiveOptions(_actors)),
        f.FilterEqual(JobLog.status, "Status", options=STATUS_OPTIONS),
        f.FilterEqual(JobLog.error_code, "Error code", options=CODE_OPTIONS),
        f.FilterEmpty(JobLog.error_code, "Error code"),
        f.DateTimeBetweenFilter(JobLog.created_at, "Time (UTC)"),
        f.DateTimeGreaterFilter(JobLog.created_at, "Time (UTC)"),
        f.DateTimeSmallerFilter(JobLog.created_at, "Time (UTC)"),
        f.FilterEqual(JobLog.trace_id, "Trace id"),
        f.FilterEqual(JobLog.message_id, "Message id"),
        *job_links.FILTERS,
    ]
    column_formatters = {
        "message": lambda v, c, m, n: _short(m.message, 90),
        "worker": lambda v, c, m, n: _short(m.worker, 18),
        "job_class": lambda v, c, m, n: _short(m.job_class, 22),
        "created_at": lambda v, c, m, n: when(m.created_at),
        "status": _status,
        "error_code": _code,
        "trace_id": _trace,
        "message_id": _message_id,
        "duration_seconds": lambda v, c, m, n: "" if m.duration_seconds is None else f"{m.duration_seconds:.2f}",
    }
    column_formatters_detail = {"error_code": _code, "status": _status, "args": _args, "related": _related,
                                "redelivered_as": _redelivered_as,
                                "traceback": _traceback, "created_at": lambda v, c, m, n: when(m.created_at),
                                "finished_at": lambda v, c, m, n: when(m.finished_at),
                                "message": lambda v, c, m, n: _pre(m.message)}
    column_formatters_export = {"duration_seconds": lambda v, c, m, n: m.duration_seconds}

    def search_placeholder(self) -> str:
        return "plan_id=13, tvdb_id=…, a message or trace id, or words"

    def get_list(self, page, sort_column, sort_desc, search, filters, execute=True, page_size=None):
        # The search is Fleet's (actors.controls.search_condition: arguments and ids by index), not
        # Flask-Admin's LIKE on every column; get_query applies it, for the list and the export alike.
        g.joblog_search = search_condition(search) if search else None
        return super().get_list(page, sort_column, sort_desc, None, filters, execute, page_size)

    def get_query(self):
        query = JobLog.select(*LIST_FIELDS)  # not the tracebacks and arguments: the details page has them
        condition = g.get("joblog_search")
        return query if condition is None else query.where(condition)

    def get_one(self, id):
        row_id = as_id(id)
        return None if row_id is None else JobLog.get_or_none(JobLog.id == row_id)  # with arguments and traceback

    def render(self, template, **kwargs):
        kwargs.setdefault("can_retry", is_admin())
        model = kwargs.get("model")
        kwargs.setdefault("warning", confirm.warning(confirm.permanent([(model.error_code, 1)])) if model else "")
        kwargs.setdefault("can_cancel", is_admin() and model is not None and not JobLog.select().where(
            (JobLog.message_id == model.message_id) & (JobLog.status == "cancelled")).exists())
        return super().render(template, **kwargs)

    @expose("/retry/", methods=("POST",))
    def retry_view(self):
        """Run a failed job again (its dead letter, or the same actor and arguments)."""
        row_id = as_id(request.form.get("id"))
        job = JobLog.get_or_none(JobLog.id == row_id) if row_id else None
        if job is None:
            flash("Record does not exist.", "error")
            return redirect(self.get_url(".index_view"))
        permanent = confirm.permanent([(job.error_code, 1)])
        if job.status != "failed":
            flash(f"Only a failed job is retried from here; this attempt is {job.status}.", "warning")
        elif permanent and not confirm.confirmed():
            return confirm.ask(self, permanent, question=f"Run this {job.job_class} job again?",
                               action=self.get_url(".retry_view"), back=self.get_url(".details_view", id=job.id),
                               fields=[("id", str(job.id))])
        else:
            try:
                flash(retry_job(dramatiq.get_broker(), job), "success")
                audit_trail.record("jobs.retry", f"job={job.id} message={job.message_id}", 1)
            except FleetError as exc:
                flash(str(exc), "error")
        return redirect(self.get_url(".details_view", id=job.id))
