"""Which rows a sweep or a panel filter selects: never imported, stale, or matching a filter; a page at a time."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from peewee import SQL, Tuple, fn

from actors.series.data import episode_data, series_data
from core.errors import FleetError
from db.models import utcnow
from db.models.series import Episode, Series

PAGE = 1_000  # rows a keyset page of a sweep, and data jobs a round trip to Redis
MAX_HOURS = 24 * 366  # "older than" beyond a year is a mistake (the bound of the CLI's --hours too)
# Errors that say the record itself is bad or unknown: import-missing sweeps skip rows that failed
# with one (unless `include_failed`). Other failures (timeouts, an outage, a refused key) are
# tried again by the next sweep.
RECORD_ERRORS = ("ERR_NOT_FOUND", "ERR_BAD_REQUEST", "ERR_INVALID_RESPONSE")
FILTER_KEYS = ("never_imported", "older_than_hours", "error_code", "tvdb_id", "series")


@dataclass(frozen=True)
class Kind:
    name: str  # "series" | "episodes": the CLI group and the word in messages
    model: type
    data_job: object  # the data actor
    default_hours: int  # of check-data-updates

    def import_task(self) -> str:
        return f"{self.name}.import-missing-data"

    def check_task(self) -> str:
        return f"{self.name}.check-data-updates"


SERIES = Kind("series", Series, series_data, 24)
EPISODES = Kind("episodes", Episode, episode_data, 48)
KINDS = {k.name: k for k in (SERIES, EPISODES)}


def missing_where(model, include_failed: bool = False):
    """Rows never imported; without `include_failed`, not those whose record the API refused."""
    where = model.data_last_updated_at.is_null()
    if not include_failed:
        where &= model.error_code.is_null() | model.error_code.not_in(RECORD_ERRORS)
    return where


def check_hours(hours: float) -> float:
    if not 0 <= hours <= MAX_HOURS:  # NaN fails too
        raise FleetError(f"hours must be between 0 and {MAX_HOURS}, not {hours!r}", exit_code=2)
    return hours


def stale_where(model, hours: float):
    return model.data_last_updated_at < utcnow() - timedelta(hours=hours)


def missing_page(model, after: int = 0, include_failed: bool = False, size: int = PAGE):
    """One page of rows never imported, in id order after id `after` (keyset), on the partial
    index of rows without data."""
    return (model.select(model.id).where(missing_where(model, include_failed) & (model.id > after))
            .order_by(model.id).limit(size))


def stale_page(model, cutoff: datetime, after: tuple | None = None, size: int = PAGE):
    """One page of rows whose data is older than `cutoff`, oldest first, after the
    (data_last_updated_at, id) pair `after` (keyset, in the order of their index)."""
    query = model.select(model.data_last_updated_at, model.id).where(model.data_last_updated_at < cutoff)
    if after is not None:
        query = query.where(Tuple(model.data_last_updated_at, model.id) > Tuple(*after))
    return query.order_by(model.data_last_updated_at, model.id).limit(size)


def missing_pages(model, include_failed: bool = False) -> Iterator[list[int]]:
    """Ids of rows never imported, a page at a time."""
    last = 0
    while ids := [i for (i,) in missing_page(model, last, include_failed).tuples()]:
        yield ids
        last = ids[-1]


def stale_pages(model, hours: float) -> Iterator[list[int]]:
    """Ids of rows whose data is older than `hours`, a page at a time. Rows a data job refreshes
    meanwhile move past the cutoff and out of the sweep."""
    cutoff, after = utcnow() - timedelta(hours=hours), None
    while rows := list(stale_page(model, cutoff, after).tuples()):
        yield [row_id for _, row_id in rows]
        after = rows[-1]


# -- the panel's filters and "Sync all matching the filter" --------------------------------
# A filter is a plain dict (JSON-safe, so a background job can carry it): `never_imported`
# (true), `older_than_hours` (a number), `error_code` (a code, or "any"), `tvdb_id`, and for
# episodes `series` (a series row id). The list and the background job both use `matching`,
# so the job acts on exactly the rows shown.


def matching(kind: Kind, spec: dict):
    unknown = set(spec) - set(FILTER_KEYS)
    if unknown:
        raise ValueError(f"unknown filter keys {sorted(unknown)}")
    model = kind.model
    where = model.id.is_null(False)
    if spec.get("never_imported"):
        where &= model.data_last_updated_at.is_null()
    if spec.get("older_than_hours") is not None:
        hours = float(spec["older_than_hours"])
        if not 0 <= hours <= MAX_HOURS:
            raise ValueError(f"older than: hours must be between 0 and {MAX_HOURS}")
        where &= stale_where(model, hours)
    if spec.get("error_code") == "any":
        where &= model.error_code.is_null(False)
    elif spec.get("error_code"):
        where &= model.error_code == spec["error_code"]
    if spec.get("tvdb_id") is not None:
        where &= model.tvdb_id == int(spec["tvdb_id"])
    if spec.get("series") is not None:
        if model is not Episode:
            raise ValueError("only episodes belong to a series")
        where &= Episode.series == int(spec["series"])
    return where


def bounded_count(query, limit: int) -> int:
    """The rows of `query`, counted up to `limit` + 1 (enough to say "more than `limit`")."""
    return query.model.select(fn.COUNT(SQL("*"))).from_(query.limit(limit + 1).alias("counted")).scalar() or 0


def count_matching(kind: Kind, spec: dict, limit: int = 100_000) -> int:
    """How many rows match, counted up to `limit` + 1 (the panel shows "100000+" beyond)."""
    return bounded_count(kind.model.select(SQL("1")).where(matching(kind, spec)), limit)


def matching_pages(kind: Kind, spec: dict, size: int = PAGE) -> Iterator[list[int]]:
    where, last, model = matching(kind, spec), 0, kind.model
    while ids := [i for (i,) in model.select(model.id).where(where & (model.id > last))
                  .order_by(model.id).limit(size).tuples()]:
        yield ids
        last = ids[-1]
