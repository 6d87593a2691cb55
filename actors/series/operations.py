"""What the CLI and the panel do to series rows, and the counts an operator troubleshoots with."""
from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from peewee import SQL, fn

from actors.series.data import INSERT_CHUNK
from actors.series.rows import RECORD_ERRORS, Kind
from db.database import database
from db.models import utcnow
from db.models.series import Series


def add_series(tvdb_ids: Iterable[int], name: str | None = None) -> tuple[int, int]:
    """Create series rows without data (the next import-missing sweep imports them), a chunk
    at a time, so any number of ids takes bounded memory; (created, already known)."""
    created = known = 0
    iterator = iter(tvdb_ids)
    while True:
        chunk = list(dict.fromkeys(next(iterator, None) for _ in range(INSERT_CHUNK)))
        chunk = [i for i in chunk if i is not None]
        if not chunk:
            return created, known
        with database.atomic():
            existing = Series.select().where(Series.tvdb_id.in_(chunk)).count()
            now = utcnow()
            Series.insert_many([{"tvdb_id": i, "name": name, "created_at": now} for i in chunk]) \
                .on_conflict_ignore().execute()
        created += len(chunk) - existing
        known += existing


def find(kind: Kind, tvdb_id: int):
    return kind.model.get_or_none(kind.model.tvdb_id == tvdb_id)


def dispatch(kind: Kind, row_id: int):
    """Send the row's data job now; None when one is already queued or running."""
    return kind.data_job.send(int(row_id))


def status_counts(kind: Kind, hours: float) -> dict:
    """The seed's troubleshooting counts: without data, older than `hours`, fresh, failed by code."""
    model = kind.model
    cutoff = utcnow() - timedelta(hours=hours)

    def count(where) -> int:
        return model.select(fn.COUNT(SQL("*"))).where(where).scalar() or 0

    failed = dict(model.select(model.error_code, fn.COUNT(SQL("*"))).where(model.error_code.is_null(False))
                  .group_by(model.error_code).order_by(model.error_code).tuples())
    without = count(model.data_last_updated_at.is_null())
    refused = count(model.error_code.in_(RECORD_ERRORS) & model.data_last_updated_at.is_null())  # on the failed index
    return {
        "kind": kind.name,
        "hours": hours,
        "without_data": without,
        "without_data_to_import": without - refused,
        "older": count(model.data_last_updated_at < cutoff),
        "fresh": count(model.data_last_updated_at >= cutoff),
        "failed_by_code": failed,
    }
