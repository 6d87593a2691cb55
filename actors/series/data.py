"""The data jobs: fetch one series or episode record from the API and store it."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from actors.runtime import fleet_actor
from core.errors import Classified
from core.redact import redact
from core.settings import get_settings
from db.database import database
from db.models import utcnow
from db.models.series import Episode, Series

log = logging.getLogger("fleet.series")

QUEUE = "data"
INSERT_CHUNK = 500

_local = threading.local()


def _client():
    """The worker thread's API client (its HTTP session is not shared between threads; the
    login token is, through Redis)."""
    from core.clients.series_client import SeriesClient

    settings = get_settings()
    if getattr(_local, "settings", None) is not settings:
        _local.client, _local.settings = SeriesClient(settings), settings
    return _local.client


def _int(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value, limit: int = 255) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def _or(value, fallback):
    """The API's value, or what the row has when the API gave none (0 is a value: season 0 holds the specials)."""
    return fallback if value is None else value


def record_failure(model) -> Callable:
    """An `on_give_up` hook: the row keeps its data, and gets the error's code, message and time."""

    def on_give_up(message, error: Classified) -> None:
        row_id = (list(message.args) + [message.kwargs.get(f"{model._meta.table_name}_id")])[0]
        model.update(error_code=error.code.code, error_message=redact(error.message)[:2000], failed_at=utcnow()) \
            .where(model.id == row_id).execute()
        log.warning("data job gave up", extra={"table": model._meta.table_name, "row_id": row_id,
                                               "error_code": error.code.code})

    on_give_up.__name__ = f"record_{model._meta.table_name}_failure"
    return on_give_up


def _stored(**fields) -> dict:
    return {**fields, "data_last_updated_at": utcnow(), "error_code": None, "error_message": None, "failed_at": None}


@fleet_actor(queue_name=QUEUE, service="series_api", unique=True, on_give_up=record_failure(Series))
def series_data(series_id: int) -> str | None:
    """Fetch a series' extended record with its episode list; store it and add its new episodes.

    Idempotent: a redelivered job writes the same row and the same episodes once more.
    """
    series = Series.get_or_none(Series.id == series_id)
    if series is None:
        return f"series #{series_id} no longer exists; nothing fetched"
    record = _client().get_series(series.tvdb_id, episodes=True)
    episodes = record.pop("episodes", None) or []
    with database.atomic():
        Series.update(**_stored(name=_or(_text(record.get("name")), series.name), data=record)) \
            .where(Series.id == series.id).execute()
        added = _upsert_episodes(series.id, [e for e in episodes if isinstance(e, dict) and _int(e.get("id"))])
    return f"stored series #{series.id} (TVDB {series.tvdb_id}); {len(episodes)} episode(s) listed, {added} new"


def _upsert_episodes(series_id: int, episodes: list[dict]) -> int:
    """Episodes of the series' record: new ones without data (the episode sweep imports them),
    known ones with their season, number, name and air date brought up to date. The count of new ones."""
    if not episodes:
        return 0
    ids = [e["id"] for e in episodes]
    known = sum(Episode.select().where(Episode.tvdb_id.in_(ids[i:i + INSERT_CHUNK])).count()
                for i in range(0, len(ids), INSERT_CHUNK))
    now = utcnow()
    rows = [{"series": series_id, "tvdb_id": e["id"], "season": _int(e.get("seasonNumber")),
             "number": _int(e.get("number")), "name": _text(e.get("name")), "aired": _text(e.get("aired"), 32),
             "created_at": now} for e in episodes]
    for i in range(0, len(rows), INSERT_CHUNK):
        Episode.insert_many(rows[i:i + INSERT_CHUNK]).on_conflict(
            conflict_target=[Episode.tvdb_id],
            preserve=[Episode.series, Episode.season, Episode.number, Episode.name, Episode.aired],
        ).execute()
    return len(set(ids)) - known


@fleet_actor(queue_name=QUEUE, service="series_api", unique=True, on_give_up=record_failure(Episode))
def episode_data(episode_id: int) -> str | None:
    """Fetch an episode's extended record and store it."""
    episode = Episode.get_or_none(Episode.id == episode_id)
    if episode is None:
        return f"episode #{episode_id} no longer exists; nothing fetched"
    record = _client().get_episode(episode.tvdb_id)
    Episode.update(**_stored(
        data=record, name=_or(_text(record.get("name")), episode.name),
        season=_or(_int(record.get("seasonNumber")), episode.season),
        number=_or(_int(record.get("number")), episode.number),
        aired=_or(_text(record.get("aired"), 32), episode.aired),
    )).where(Episode.id == episode.id).execute()
    return f"stored episode #{episode.id} (TVDB {episode.tvdb_id})"
