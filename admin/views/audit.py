"""The audit log (admins only): who did what, from where, newest first, with filters and CSV."""
from __future__ import annotations

from flask import url_for
from flask_admin.contrib.peewee import filters as f
from markupsafe import Markup

from actors import audit
from admin.access import AdminAccess
from admin.views.base import ReadOnlyModelView, cut
from admin.views.jobs import LiveOptions
from db.models.audit import AuditEvent


def _trace(view, context, model, name):
    if not model.trace_id:
        return ""
    return Markup('<a href="{}" title="the job-log rows of this trace">{}</a>').format(
        url_for("joblogs.index_view", flt0_trace_id_equals=model.trace_id), model.trace_id)


class AuditView(AdminAccess, ReadOnlyModelView):
    export_max_rows = 100_000
    can_export = True
    column_list = ["created_at", "who", "role", "action", "target", "rows", "source", "address", "trace_id"]
    column_details_list = ["id", *column_list]
    column_export_list = column_list
    column_labels = {"created_at": "Time (UTC)", "trace_id": "Trace id", "address": "From"}
    column_sortable_list = ["created_at"]
    column_default_sort = ("created_at", True)
    column_searchable_list = ["target"]
    column_filters = [
        f.FilterEqual(AuditEvent.who, "Who"),
        f.FilterEqual(AuditEvent.action, "Action", options=LiveOptions(audit.actions)),
        f.FilterEqual(AuditEvent.source, "Source", options=[(s, s) for s in AuditEvent.SOURCES]),
        f.FilterEqual(AuditEvent.role, "Role"),
        f.DateTimeGreaterFilter(AuditEvent.created_at, "Time (UTC)"),
        f.DateTimeSmallerFilter(AuditEvent.created_at, "Time (UTC)"),
        f.FilterEqual(AuditEvent.trace_id, "Trace id"),
    ]
    column_formatters = {"target": lambda v, c, m, n: cut(m.target, 120), "trace_id": _trace}

    def search_placeholder(self) -> str:
        return "Search in targets"
