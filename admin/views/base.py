"""What every list of the panel shares: read-only, login, actions for admins only, fast paging."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from flask import Response, flash, redirect, request, stream_with_context
from flask_admin.contrib.peewee import ModelView
from flask_admin.model import typefmt
from flask_login import current_user
from werkzeug.utils import secure_filename

from admin import audit_trail, exports
from admin.access import PanelAccess, is_admin
from admin.exports import csv_safe
from core import formats
from core.errors import FleetError
from db.database import database

MAX_ID = 2**63 - 1  # what a database integer holds; past it SQLite raises OverflowError
MAX_ROWS_SKIPPED = 10**9  # no list pages that far
MAX_FILTERS = 20  # each is a nested condition; SQLite's parser gives up somewhere past a hundred
MAX_SEARCH_WORDS = 10


def as_id(value) -> int | None:
    """A row id from a request, or None when it is not one (text, a fraction, past 64 bits)."""
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if 0 < number <= MAX_ID else None


def utc(value) -> str:
    return formats.moment(value)


def cut(text: str | None, limit: int = 160) -> str:
    text = text or ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ReadOnlyModelView(PanelAccess, ModelView):
    """A list with filters and details; rows change only through the view's actions."""

    can_create = False
    can_edit = False
    can_delete = False
    can_view_details = True
    simple_list_pager = True  # no COUNT(*) over a big table on every page
    named_filter_urls = True
    page_size = 50
    can_set_page_size = True
    page_size_options = (20, 50, 100)
    column_type_formatters = {**typefmt.BASE_FORMATTERS, datetime: lambda view, value, name: utc(value)}
    column_type_formatters_detail = {**typefmt.DETAIL_FORMATTERS, datetime: lambda view, value, name: utc(value)}
    column_type_formatters_export = {**typefmt.EXPORT_FORMATTERS, datetime: lambda view, value, name: utc(value),
                                     str: lambda view, value, name: csv_safe(value)}

    def _export_csv(self, return_url):
        """Flask-Admin's CSV export, every cell quoted, within the account's export slots (admin.exports)."""
        account, slots = current_user.id, exports.slots()
        if not slots.take(account):
            return Response(f"Too many exports at once: at most {exports.PER_ACCOUNT} of yours (and a few in all) "
                            "run at a time. Try again when one has finished.\n", 429,
                            {"Retry-After": str(exports.RETRY_AFTER)}, mimetype="text/plain")
        try:
            _count, data = self._export_data()
        except BaseException:
            slots.give_back(account)
            raise
        writer = exports.writer()

        def rows():
            yield writer.writerow([str(c[1]) for c in self._export_columns])
            for row in data:
                yield writer.writerow([self.get_export_value(row, c[0]) for c in self._export_columns])

        response = Response(stream_with_context(rows()), mimetype="text/csv", headers={
            "Content-Disposition": f"attachment;filename={secure_filename(self.get_export_name(export_type='csv'))}"})
        response.call_on_close(lambda: slots.give_back(account))
        return response

    def is_action_allowed(self, name: str) -> bool:
        return is_admin() and super().is_action_allowed(name)

    def get_one(self, id):
        row_id = as_id(id)
        return None if row_id is None else super().get_one(row_id)  # None: "Record does not exist."

    def _get_list_filter_args(self):
        given = [arg for arg in request.args if arg.startswith("flt")]
        if len(given) > MAX_FILTERS:
            flash(f"Too many filters ({len(given)}); at most {MAX_FILTERS} apply at once, so none was applied.",
                  "error")
            return []
        return super()._get_list_filter_args()

    def get_list(self, page, sort_column, sort_desc, search, filters, execute=True, page_size=None):
        page = max(0, page or 0)  # a negative page is an error on PostgreSQL
        if page * (page_size or self.page_size) > MAX_ROWS_SKIPPED:
            return None, []  # far past the last row: an empty page, not an overflowing OFFSET
        words = (search or "").split()
        if len(words) > MAX_SEARCH_WORDS:
            flash(f"Searched for the first {MAX_SEARCH_WORDS} words only.", "warning")
            search = " ".join(words[:MAX_SEARCH_WORDS])
        count, query = super().get_list(page, sort_column, sort_desc, search, filters, execute=False,
                                        page_size=page_size)
        if page_size and page_size == self.export_max_rows:  # what Flask-Admin's CSV export asks for
            return count, _stream(query)
        return count, (list(query) if execute else query)


def filter_spec(view) -> dict | None:
    """The filters of this request as a spec of the view's `key`ed filters (each filter has a
    `key` and a `spec_value(value)`), for a background job to repeat the list's query; None when
    one of them is unknown or has a bad value (Flask-Admin would drop it, and the job would
    reach further than the list) or a key comes twice."""
    given = [arg for arg in request.args if arg.startswith("flt")]
    parsed = view._get_list_filter_args() or []
    if len(parsed) != len(given):
        return None
    spec: dict = {}
    for index, _name, value in parsed:
        flt = view._filters[index]
        value = flt.spec_value(flt.clean(value))
        if spec.setdefault(flt.key, value) != value:
            return None  # two values for one key: the list shows nothing, so act on nothing
    return spec


def on_all_matching(view, verb: tuple[str, str], what: str, count: Callable[[dict], int],
                    start: Callable[[dict, int], object]):
    """The flow of "… all matching the filter" (retry failed plans, sync series data): nothing is
    done, and a flash says why, when the filter is not valid or matches nothing; otherwise
    `start(spec, how many match)` starts the work in the background, flashes what it did and
    says where to go (None: back to the list); the audit log notes it with the filter and the
    count. `verb` is ("retry", "retried")."""
    back = redirect(view.get_url(".index_view", **request.args))
    spec = filter_spec(view)
    if spec is None:
        flash(f"The filter is not valid; nothing was {verb[1]}.", "error")
        return back
    try:
        matching = count(spec)
        if not matching:
            flash(f"No {what} match the filter; nothing to {verb[0]}.", "warning")
            return back
        done = start(spec, matching) or back
    except FleetError as exc:
        flash(str(exc), "error")
        return back
    audit_trail.record(f"{view.endpoint}.{verb[0]}_matching", audit_trail.filter_text(spec), matching)
    return done


def _stream(query):
    """Rows for the CSV export, fetched while the response streams, after the request's
    connection was closed (hence a connection of its own), without caching them."""
    with database.connection_context():
        yield from query.iterator()
