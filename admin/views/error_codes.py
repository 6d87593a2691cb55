"""Error codes: the registry with how often each code happened in the job logs and, per domain
(workout days, series, episodes, batch items, dead letters), what is failed with it now, each
with a link to those rows and a "retry all of this code" of its own."""
from __future__ import annotations

from dataclasses import dataclass

import dramatiq
from flask import url_for
from flask_admin import BaseView, expose
from peewee import SQL, fn

from actors.workouts import failed_days_by_code
from admin.access import PanelAccess, is_admin
from admin.cache import cached
from admin.stats import error_code_counts
from core import dead_letters as dl
from core.errors import CODES, FleetError
from db.models.batches import BatchItem
from db.models.series import Episode, Series

# the "Error code equals" filter of the job-log and failed-plan lists, as Flask-Admin names it in URLs
CODE_FILTER = "flt0_error_code_equals"
SYNC_FILTER = "flt0_failed_with_equals"  # the series and episode lists' "Failed with"
CACHE_SECONDS = 5
DEAD_LETTERS_SEARCHED = 5_000


@dataclass(frozen=True)
class Domain:
    """Rows of one kind failed with a code: how to count them, list them and retry them all."""

    name: str  # the column's heading
    count: object  # () -> {code: rows}
    rows_url: object  # code -> the list of those rows
    retry_url: object | None  # code -> the POST that retries them all (None: no bulk retry for it)
    verb: str = "Retry"


def _by_code(model, where) -> dict[str, int]:
    return dict(model.select(model.error_code, fn.COUNT(SQL("*"))).where(where & model.error_code.in_(list(CODES)))
                .group_by(model.error_code).tuples())


def _dead_letters() -> dict[str, int]:
    counts: dict[str, int] = {}
    try:
        for letter in dl.list_dead_letters(dramatiq.get_broker(), DEAD_LETTERS_SEARCHED):
            if letter.error_code:
                counts[letter.error_code] = counts.get(letter.error_code, 0) + 1
    except (FleetError, OSError):
        return {}  # RabbitMQ, or Redis away: the page still shows the rest
    return counts


DOMAINS = [
    Domain("workout days", failed_days_by_code, lambda c: url_for("failed_plans.index_view", **{CODE_FILTER: c}),
           lambda c: url_for("failed_plans.retry_matching", **{CODE_FILTER: c})),
    Domain("series", lambda: _by_code(Series, Series.error_code.is_null(False)),
           lambda c: url_for("series_data.index_view", **{SYNC_FILTER: c}),
           lambda c: url_for("series_data.sync_matching", **{SYNC_FILTER: c}), "Sync"),
    Domain("episodes", lambda: _by_code(Episode, Episode.error_code.is_null(False)),
           lambda c: url_for("episode_data.index_view", **{SYNC_FILTER: c}),
           lambda c: url_for("episode_data.sync_matching", **{SYNC_FILTER: c}), "Sync"),
    Domain("batch items", lambda: _by_code(BatchItem, BatchItem.status == "failed"),
           lambda c: url_for("batches.index"), None),
    Domain("dead letters", _dead_letters, lambda c: url_for("dead_letters.index", error_code=c),
           lambda c: url_for("dead_letters.requeue_all", error_code=c), "Requeue"),
]


def _domain_counts() -> list[dict[str, int]]:
    return [d.count() for d in DOMAINS]


class ErrorCodesView(PanelAccess, BaseView):
    @expose("/")
    def index(self):
        counts = error_code_counts()
        failed = cached("error-codes:domains", CACHE_SECONDS, _domain_counts)
        rows = [{"code": c, "counts": counts.get(c.code, (0, 0, 0)),
                 "domains": [(d, n.get(c.code, 0)) for d, n in zip(DOMAINS, failed)]} for c in CODES.values()]
        totals = [sum(n.values()) for n in failed]
        return self.render("error_codes.html", rows=rows, domains=DOMAINS, totals=totals, can_act=is_admin(),
                           code_filter=CODE_FILTER)
