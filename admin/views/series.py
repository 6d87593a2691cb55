"""Series data: series and episodes with their data age and last error, filters, sync in bulk,
the sweeps' recent runs and a button to run one now."""
from __future__ import annotations

import json
from collections import Counter
from datetime import datetime

from flask import abort, flash, redirect, request, url_for
from flask_admin import expose
from flask_admin.actions import action
from flask_admin.contrib.peewee import filters as f
from flask_admin.model import filters as base_filters
from markupsafe import Markup
from peewee import SQL, fn

from actors import series as ops
from admin.views import confirm
from admin.views.base import ReadOnlyModelView, as_id, cut, filter_spec, on_all_matching, utc
from admin.views.job_links import jobs_url
from core import formats
from core.errors import CODES
from db.models import utcnow
from db.models.series import Episode

COUNT_LIMIT = 100_000  # "Sync all matching" counts this many rows at most ("100000+")


# -- filters: each is a key of `actors.series.matching`, so the background job repeats it ----------

class SyncFilter(f.BasePeeweeFilter):
    key = ""
    op = "equals"

    def __init__(self, kind: ops.Kind, name: str, options=None):
        super().__init__(kind.model.id, name, options)  # a column of the model itself: no join
        self.kind = kind

    def apply(self, query, value):
        return query.where(ops.matching(self.kind, {self.key: self.spec_value(value)}))

    def spec_value(self, value):
        return value

    def operation(self):
        return self.op


class NeverImported(SyncFilter):
    key, op = "never_imported", "is"

    def __init__(self, kind):
        super().__init__(kind, "Never imported", options=[("yes", "yes")])

    def clean(self, value):
        if value != "yes":
            raise ValueError("yes is the only value")
        return value

    def spec_value(self, value):
        return True


class OlderThan(SyncFilter):
    key, op = "older_than_hours", "hours"

    def __init__(self, kind):
        super().__init__(kind, "Data older than")

    def clean(self, value) -> float:
        hours = float(value)
        if not 0 <= hours <= ops.MAX_HOURS:  # NaN fails too
            raise ValueError(f"hours must be between 0 and {ops.MAX_HOURS}")
        return hours


class FailedWith(SyncFilter):
    key, op = "error_code", "equals"

    def __init__(self, kind):
        super().__init__(kind, "Failed with", options=[("any", "any code"), *((c, c) for c in CODES)])

    def clean(self, value):
        if value != "any" and value not in CODES:
            raise ValueError("unknown error code")
        return value


class TvdbIs(SyncFilter, base_filters.BaseIntFilter):
    key = "tvdb_id"

    def __init__(self, kind):
        super().__init__(kind, "TVDB id")

    def validate(self, value) -> bool:
        return as_id(value) is not None  # a number past 64 bits would overflow the query


class SeriesIs(TvdbIs):
    key = "series"

    def __init__(self, kind):
        SyncFilter.__init__(self, kind, "Series")


# -- formatting ----------------------------------------------------------------------------------

def age(moment: datetime | None, now: datetime | None = None) -> str:
    return formats.ago(((now or utcnow()) - moment).total_seconds()) if moment else "never"


def _age(view, context, model, name):
    moment = model.data_last_updated_at
    if moment is None:
        css = "fleet-data-failed" if model.error_code else "fleet-data-never"
    else:
        css = "fleet-data-stale" if (utcnow() - moment).total_seconds() > view.kind.default_hours * 3600 else "fleet-data-fresh"
    return Markup('<span class="{}" title="{}">{}</span>').format(css, utc(moment) + " UTC" if moment else "", age(moment))


def _code(view, context, model, name):
    code = model.error_code
    if not code:
        return ""
    return Markup('<span class="fleet-data-failed" title="{}">{}</span> <span class="small text-muted">{}</span>').format(
        CODES[code].sentence if code in CODES else "", code, utc(model.failed_at))


def _data(view, context, model, name):
    return Markup('<pre class="fleet-pre">{}</pre>').format(json.dumps(model.data, indent=2, sort_keys=True)) \
        if model.data is not None else ""


def _jobs(view, context, model, name):
    return Markup('<a href="{}" title="The data jobs of this row">jobs</a>').format(
        jobs_url(view.jobs_filter, model.id))


def _name(view, context, model, name):
    return Markup('<span title="{}">{}</span>').format(model.name or "", cut(model.name, 40)) if model.name else ""


# -- the views ---------------------------------------------------------------------------------------

class SyncedRowsView(ReadOnlyModelView):
    """What the series and the episodes lists share."""

    kind: ops.Kind
    jobs_filter = ""  # the job-log filter of this kind's data jobs (admin.views.job_links)
    list_template = "series_data_list.html"
    column_labels = {"tvdb_id": "TVDB id", "data_last_updated_at": "Data age", "error_code": "Last error",
                     "error_message": "Error message"}
    column_sortable_list = ["id", "data_last_updated_at"]
    column_default_sort = ("id", True)
    column_formatters = {"data_last_updated_at": _age, "error_code": _code, "jobs": _jobs, "name": _name,
                         "error_message": lambda v, c, m, n: Markup('<span title="{}">{}</span>').format(
                             m.error_message or "", cut(m.error_message, 80))}
    column_formatters_detail = {"data_last_updated_at": _age, "error_code": _code, "data": _data, "jobs": _jobs}

    def __init__(self, kind: ops.Kind, *extra_filters, **kwargs):
        self.kind = kind
        self.column_filters = [NeverImported(kind), OlderThan(kind), FailedWith(kind), TvdbIs(kind),
                               *(f(kind) for f in extra_filters)]
        super().__init__(kind.model, **kwargs)

    def get_query(self):
        model = self.kind.model
        return model.select(*[field for name, field in model._meta.fields.items() if name != "data"])

    def get_one(self, id):
        row_id = as_id(id)
        return None if row_id is None else self.kind.model.get_or_none(self.kind.model.id == row_id)

    # -- what the page header shows -------------------------------------------------------------
    def summary(self) -> dict:
        return {"counts": ops.status_counts(self.kind, self.kind.default_hours),
                "runs": [r for r in ops.recent_sweep_runs(20) if r.sweep.startswith(self.kind.name + ".")][:5],
                "sweeps": [self.kind.import_task(), self.kind.check_task()],
                "running": {name: ops.running_sweep(name) for name in (self.kind.import_task(), self.kind.check_task())}}

    def codes_of(self, where) -> Counter:
        """The permanent error codes of the rows `where` selects, with their counts."""
        model = self.kind.model
        return confirm.permanent(model.select(model.error_code, fn.COUNT(SQL("*")))
                                 .where(where & model.error_code.is_null(False)).group_by(model.error_code).tuples())

    def matching_warning(self) -> str:
        """ "will fail again: ERR_NOT_FOUND ×12" for the rows of the filter, or "" """
        spec = filter_spec(self)
        return confirm.warning(self.codes_of(ops.matching(self.kind, spec))) if spec is not None else ""

    def matching_count(self) -> str:
        spec = filter_spec(self)
        if spec is None:
            return "?"
        n = ops.count_matching(self.kind, spec, COUNT_LIMIT)
        return f"{COUNT_LIMIT}+" if n > COUNT_LIMIT else str(n)

    # -- actions ------------------------------------------------------------------------------------
    @action("sync", "Sync selected", "Dispatch a data job for each selected row now?")
    def action_sync(self, ids):
        row_ids = [i for i in (as_id(raw) for raw in ids) if i is not None]
        permanent = self.codes_of(self.kind.model.id.in_(row_ids))
        if permanent and not confirm.confirmed():
            return confirm.ask(self, permanent, question=f"Sync the {len(row_ids)} selected {self.kind.name}?",
                               action=url_for(".action_view"), back=request.form.get("url") or url_for(".index_view"),
                               fields=[("action", "sync"), ("url", request.form.get("url", "")),
                                       *(("rowid", str(i)) for i in row_ids)])
        counts = ops.sync_rows(self.kind, row_ids)
        flash(f"Dispatched {counts['enqueued']} data job(s); {counts['already_queued']} already queued or running.",
              "success")

    @expose("/sync-matching/", methods=("POST",))
    def sync_matching(self):
        def start(spec: dict, matching: int) -> None:
            message = ops.sync_matching.send(self.kind.name, spec)
            if message is None:
                flash("A sync of exactly this filter is already queued or running.", "warning")
                return
            flash(Markup('Sync of {} matching {} started in the background; its <a href="{}">job log</a> reports '
                         'how many data jobs it dispatched.').format(
                f"{COUNT_LIMIT}+" if matching > COUNT_LIMIT else matching, self.kind.name,
                url_for("joblogs.index_view", flt0_message_id_equals=message.message_id)), "success")

        spec = filter_spec(self)
        permanent = self.codes_of(ops.matching(self.kind, spec)) if spec is not None else None
        if permanent and not confirm.confirmed():
            return confirm.ask(self, permanent, question=f"Sync the {self.matching_count()} {self.kind.name} that "
                               "match the filter?", action=request.full_path.rstrip("?"),
                               back=self.get_url(".index_view", **request.args))
        return on_all_matching(self, ("sync", "synced"), self.kind.name,
                               lambda spec: ops.count_matching(self.kind, spec, COUNT_LIMIT), start)

    @expose("/run-sweep/<sweep>/", methods=("POST",))
    def run_sweep(self, sweep: str):
        if sweep not in (self.kind.import_task(), self.kind.check_task()):
            abort(404)
        message = ops.SWEEP_ACTORS[sweep].send()
        if message is None:
            flash(f"{sweep} is already queued or running.", "warning")
        else:
            flash(Markup('{} queued (<a href="{}">job log</a>).').format(
                sweep, url_for("joblogs.index_view", flt0_message_id_equals=message.message_id)), "success")
        return redirect(self.get_url(".index_view"))


def _episodes(view, context, model, name):
    count = Episode.select().where(Episode.series == model.id).count()
    return Markup('<a href="{}">{} episode(s)</a>').format(
        url_for("episode_data.index_view", flt0_series_equals=model.id), count)


class SeriesDataView(SyncedRowsView):
    jobs_filter = "series"
    column_list = ["id", "tvdb_id", "name", "data_last_updated_at", "error_code", "error_message", "jobs"]
    column_details_list = ["id", "tvdb_id", "name", "data_last_updated_at", "error_code", "error_message",
                           "created_at", "episodes", "jobs", "data"]
    column_formatters_detail = {**SyncedRowsView.column_formatters_detail, "episodes": _episodes}

    def __init__(self, **kwargs):
        super().__init__(ops.SERIES, **kwargs)


def _series(view, context, model, name):
    return Markup('<a href="{}">#{}</a>').format(url_for("series_data.details_view", id=model.series_id),
                                                 model.series_id)


class EpisodeDataView(SyncedRowsView):
    jobs_filter = "episode"
    column_list = ["id", "tvdb_id", "series", "season", "number", "name", "aired", "data_last_updated_at",
                   "error_code", "error_message", "jobs"]
    column_details_list = ["id", "tvdb_id", "series", "season", "number", "name", "aired", "data_last_updated_at",
                           "error_code", "error_message", "created_at", "jobs", "data"]
    column_formatters = {**SyncedRowsView.column_formatters, "series": _series}
    column_formatters_detail = {**SyncedRowsView.column_formatters_detail, "series": _series}

    def __init__(self, **kwargs):
        super().__init__(ops.EPISODES, SeriesIs, **kwargs)
