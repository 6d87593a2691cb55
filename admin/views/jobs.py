"""Job logs: every attempt of every job, newest first, with filters, search, details and CSV."""
from __future__ import annotations

import json

from flask import url_for
from flask_admin.contrib.peewee import filters as f
from markupsafe import Markup

from admin.stats import distinct_values
from admin.views.base import ReadOnlyModelView, cut
from core.errors import CODES
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
    return Markup('<span title="{}">{}</span>').format(sentence, code)


def _trace(view, context, model, name):
    if not model.trace_id:
        return ""
    return Markup('<a href="{}" title="All attempts of this trace">{}</a>').format(
        url_for(".index_view", flt0_trace_id_equals=model.trace_id), model.trace_id)


def _pre(text: str | None):
    return Markup('<pre class="fleet-pre">{}</pre>').format(text) if text else ""


def _args(view, context, model, name):
    if not model.args:
        return ""
    try:
        pretty = json.dumps(json.loads(model.args), indent=2, sort_keys=True)
    except ValueError:
        pretty = model.args
    return _pre(redact(pretty))


class JobLogView(ReadOnlyModelView):
    export_max_rows = 100_000
    can_export = True
    column_list = ["created_at", "job_class", "status", "attempt", "error_code", "message", "duration_seconds",
                   "trace_id", "worker"]
    column_details_list = ["id", "run_id", "created_at", "finished_at", "job_class", "queue", "message_id", "status",
                           "attempt", "error_code", "message", "duration_seconds", "trace_id", "worker", "args",
                           "traceback"]
    column_export_list = ["created_at", "finished_at", "job_class", "queue", "message_id", "status", "attempt",
                          "error_code", "message", "duration_seconds", "trace_id", "worker"]
    column_labels = {"created_at": "Time (UTC)", "job_class": "Actor", "duration_seconds": "Seconds",
                     "trace_id": "Trace id", "error_code": "Error code", "finished_at": "Finished (UTC)"}
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
    ]
    column_formatters = {
        "message": lambda v, c, m, n: cut(m.message),
        "error_code": _code,
        "trace_id": _trace,
        "duration_seconds": lambda v, c, m, n: "" if m.duration_seconds is None else f"{m.duration_seconds:.2f}",
    }
    column_formatters_detail = {"error_code": _code, "args": _args, "traceback": lambda v, c, m, n: _pre(m.traceback),
                                "message": lambda v, c, m, n: _pre(m.message)}
    column_formatters_export = {"duration_seconds": lambda v, c, m, n: m.duration_seconds}

    def search_placeholder(self) -> str:
        return "Search in messages"

    def get_query(self):
        return JobLog.select(*LIST_FIELDS)  # not the tracebacks and arguments: the details page has them
