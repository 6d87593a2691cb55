"""Series and episodes kept in sync with the series data API, in three stages:

- data jobs (`series_data`, `episode_data`) fetch one record, store it and set
  `data_last_updated_at`; a series' record also adds its new episodes (without data);
- import-missing sweeps find rows never imported (`data_last_updated_at IS NULL`);
- check-updates sweeps find rows whose data is older than N hours.

Sweeps only enqueue (`send_many`, a chunk of rows a round trip, unique per row) and data jobs
only fetch and store. A sweep never runs twice at once, whoever starts it (the scheduler, the
panel, the CLI): a run holds a Redis lock for as long as it works. The operations the CLI and
the panel share are here too.

Modules: `data` (the data jobs), `rows` (what sweeps and panel filters select), `sweeps`,
`operations` (what the CLI and the panel do to rows), `dashboard`.
"""
from actors.series.dashboard import SweepRun, budget_usage, overview, recent_sweep_runs
from actors.series.data import episode_data, record_failure, series_data
from actors.series.operations import add_series, dispatch, find, status_counts
from actors.series.rows import (
                                EPISODES,
                                FILTER_KEYS,
                                KINDS,
                                MAX_HOURS,
                                PAGE,
                                RECORD_ERRORS,
                                SERIES,
                                Kind,
                                bounded_count,
                                check_hours,
                                count_matching,
                                matching,
                                matching_pages,
                                missing_page,
                                missing_pages,
                                missing_where,
                                stale_page,
                                stale_pages,
                                stale_where,
)
from actors.series.sweeps import (
                                SWEEP_ACTORS,
                                SWEEPS_BY_ACTOR,
                                SweepRunning,
                                SweepStalled,
                                check_episodes_data_updates,
                                check_series_data_updates,
                                check_updates,
                                enqueue_pages,
                                import_missing,
                                import_missing_episodes_data,
                                import_missing_series_data,
                                run_here,
                                running_sweep,
                                sweep_lock,
                                sweep_rows,
                                sync_matching,
                                sync_rows,
)

__all__ = [
    "EPISODES", "FILTER_KEYS", "KINDS", "Kind", "MAX_HOURS", "PAGE", "RECORD_ERRORS", "SERIES", "SWEEPS_BY_ACTOR",
    "SWEEP_ACTORS", "SweepRun", "SweepRunning", "SweepStalled", "add_series", "bounded_count", "budget_usage",
    "check_episodes_data_updates", "check_hours", "check_series_data_updates", "check_updates", "count_matching",
    "dispatch", "enqueue_pages", "episode_data", "find", "import_missing", "import_missing_episodes_data",
    "import_missing_series_data", "matching", "matching_pages", "missing_page", "missing_pages", "missing_where",
    "overview", "recent_sweep_runs", "record_failure", "run_here", "running_sweep", "series_data", "stale_page",
    "stale_pages", "stale_where", "status_counts", "sweep_lock", "sweep_rows", "sync_matching", "sync_rows",
]
