"""The panel's series data pages, job statistics and the dashboard's series block, through
Flask's test client (a real worker where a background job runs)."""
from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest

from actors import series as ops
from db.models import utcnow
from db.models.jobs import JobLog
from db.models.series import Episode, Series
from tests.helpers import wait_for
from tests.panel import csrf_token, flashes

NEVER = "flt0_never_imported_is=yes"
OLDER = "flt0_data_older_than_hours="
FAILED = "flt0_failed_with_equals="


def listed(client, path: str = "/admin/series/", query: str = "") -> list[int]:
    page = client.get(path + ("?" + query if query else ""))
    assert page.status_code == 200, page.text[:500]
    return sorted(int(i) for i in re.findall(r'name="rowid"[^>]*value="(\d+)"', page.text))


@pytest.fixture
def rows(db):
    """Never imported, failed 404, stale (30 h), fresh: a series each."""
    now = utcnow()
    never = Series.create(tvdb_id=1, name="Never")
    missing = Series.create(tvdb_id=2, error_code="ERR_NOT_FOUND", error_message="HTTP 404 from <api>", failed_at=now)
    stale = Series.create(tvdb_id=3, name="Stale", data={"id": 3}, data_last_updated_at=now - timedelta(hours=30))
    fresh = Series.create(tvdb_id=4, name="Fresh", data={"id": 4}, data_last_updated_at=now - timedelta(minutes=5))
    return never, missing, stale, fresh


def test_series_list_shows_data_age_last_error_and_counts(admin_client, rows):
    never, missing, stale, fresh = rows
    page = admin_client.get("/admin/series/").text
    assert listed(admin_client) == sorted(r.id for r in rows)
    assert "never" in page and "30 h ago" in page and "5 min ago" in page
    assert "ERR_NOT_FOUND" in page and "HTTP 404 from &lt;api&gt;" in page  # outside text escaped
    counts = re.search(r'id="data-counts">(.*?)</table>', page, re.S).group(1)
    cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", counts, re.S)]
    assert cells[:2] == ["without data", "2"] and "1 skipped by import-missing-data" in cells[2]
    assert cells[3:5] == ["older than 24 h", "1"] and cells[6:8] == ["fresh", "1"]
    assert cells[9:11] == ["failed", "1"] and "ERR_NOT_FOUND 1" in cells[11]
    assert "Sync 4 matching" in page
    detail = admin_client.get(f"/admin/series/details/?id={stale.id}").text
    assert "&#34;id&#34;: 3" in detail or '"id": 3' in detail


@pytest.mark.parametrize("query,expected", [
    (NEVER, ["never", "missing"]),
    (OLDER + "24", ["stale"]),
    (OLDER + "0", ["stale", "fresh"]),
    (FAILED + "ERR_NOT_FOUND", ["missing"]),
    (FAILED + "any", ["missing"]),
    (FAILED + "ERR_AUTH", []),
    ("flt0_tvdb_id_equals=4", ["fresh"]),
    (NEVER + "&flt1_failed_with_equals=any", ["missing"]),
])
def test_series_filters(admin_client, rows, query, expected):
    by_name = dict(zip(["never", "missing", "stale", "fresh"], rows))
    assert listed(admin_client, query=query) == sorted(by_name[n].id for n in expected)


@pytest.mark.parametrize("query", [OLDER + "abc", OLDER + "-1", OLDER + "nan", OLDER + "1e12", FAILED + "ERR_NOPE",
                                   "flt0_never_imported_is=no", "flt0_tvdb_id_equals=x", "page=-3",
                                   "flt0_tvdb_id_equals=99999999999999999999"])
def test_bad_filter_values_never_give_an_error_page(admin_client, rows, query):
    page = admin_client.get("/admin/series/?" + query)
    assert page.status_code == 200
    response = admin_client.post("/admin/series/sync-matching/?" + query, follow_redirects=True,
                                 data={"csrf_token": csrf_token(admin_client, "/admin/series/")})
    assert response.status_code == 200
    if query != "page=-3":
        assert "The filter is not valid; nothing was synced." in flashes(response.text)


def test_sync_selected_dispatches_a_data_job_each(admin_client, broker, rows):
    ids = [rows[0].id, rows[2].id]
    response = admin_client.post("/admin/series/action/", follow_redirects=True, data={
        "action": "sync", "rowid": [*ids, "99999999999999999999", "x"],
        "csrf_token": csrf_token(admin_client, "/admin/series/")})
    assert "Dispatched 2 data job(s); 0 already queued or running." in flashes(response.text)
    broker.client.flushdb()
    response = admin_client.post("/admin/series/action/", follow_redirects=True, data={
        "action": "sync", "rowid": ids, "csrf_token": csrf_token(admin_client, "/admin/series/")})
    assert "Dispatched 2 data job(s); 0 already queued or running." in flashes(response.text)
    again = admin_client.post("/admin/series/action/", follow_redirects=True, data={
        "action": "sync", "rowid": ids, "csrf_token": csrf_token(admin_client, "/admin/series/")})
    assert "Dispatched 0 data job(s); 2 already queued or running." in flashes(again.text)
    assert broker.client.hlen("fleet:data.msgs") == 2


def test_sync_all_matching_runs_in_the_background_and_reports_its_counts(admin_client, broker, db):
    from tests.helpers import InProcessWorker

    for i in range(1, 1_201):
        Series.create(tvdb_id=i, data_last_updated_at=None if i % 3 else utcnow())
    ops.dispatch(ops.SERIES, Series.get(Series.tvdb_id == 1).id)  # one of them already queued
    page = admin_client.get("/admin/series/?" + NEVER).text
    assert "Sync 800 matching" in page
    panel = InProcessWorker(broker, queues={"panel"}, worker_threads=1, worker_timeout=100)
    panel.start()
    try:
        response = admin_client.post("/admin/series/sync-matching/?" + NEVER, follow_redirects=True,
                                     data={"csrf_token": csrf_token(admin_client, "/admin/series/")})
        message = next(m for m in flashes(response.text) if m.startswith("Sync of"))
        assert message.startswith("Sync of 800 matching series started in the background")
        message_id = re.search(r"flt0_message_id_equals=([\w-]+)", response.text).group(1)
        broker.join("panel", timeout=30_000)
    finally:
        panel.stop()
    row = wait_for(lambda: JobLog.get_or_none((JobLog.message_id == message_id) & (JobLog.status == "success")),
                   timeout=10, message="the sync's JobLog row")
    assert json.loads(row.message) == {"found": 800, "enqueued": 799, "already_queued": 1, "kind": "series",
                                       "filter": {"never_imported": True}}
    assert broker.client.hlen("fleet:data.msgs") == 800


def test_run_a_sweep_now_from_the_panel(admin_client, broker, rows):
    token = csrf_token(admin_client, "/admin/series/")
    response = admin_client.post("/admin/series/run-sweep/series.import-missing-data/", data={"csrf_token": token},
                                 follow_redirects=True)
    assert "series.import-missing-data queued (job log)." in flashes(response.text)
    again = admin_client.post("/admin/series/run-sweep/series.import-missing-data/", data={"csrf_token": token},
                              follow_redirects=True)
    assert "series.import-missing-data is already queued or running." in flashes(again.text)
    assert admin_client.post("/admin/series/run-sweep/jobs.cleanup/", data={"csrf_token": token}).status_code == 404
    assert broker.client.hlen("fleet:sweeps.msgs") == 1


def test_a_viewer_sees_the_pages_but_no_action(viewer_client, rows):
    page = viewer_client.get("/admin/series/").text
    assert "ERR_NOT_FOUND" in page and "id=\"sync-matching\"" not in page and "Run series.import-missing-data now" not in page
    assert 'value="sync"' not in page
    assert viewer_client.get("/admin/episodes/").status_code == 200
    token = csrf_token(viewer_client, "/admin/series/")
    for path in ("/admin/series/sync-matching/", "/admin/series/run-sweep/series.import-missing-data/"):
        assert viewer_client.post(path, data={"csrf_token": token}).status_code == 403


def test_episodes_list_links_to_its_series(admin_client, rows):
    stale = rows[2]
    episode = Episode.create(series=stale, tvdb_id=301, season=1, number=1, name="Pilot")
    page = admin_client.get("/admin/episodes/").text
    assert f'href="/admin/series/details/?id={stale.id}"' in page and "Pilot" in page
    assert listed(admin_client, "/admin/episodes/", NEVER) == [episode.id]


def test_dashboard_shows_sweep_runs_with_counts_and_the_budget(admin_client, broker, db):
    now = utcnow()
    JobLog.create(run_id="a", job_class="import_missing_series_data", message_id="m-1", queue="sweeps",
                  status="success", duration_seconds=1.5, created_at=now - timedelta(minutes=2),
                  message=json.dumps({"found": 12, "enqueued": 10, "already_queued": 2}))
    JobLog.create(run_id="b", job_class="check_episodes_data_updates", message_id="m-2", queue="cli",
                  status="success", duration_seconds=0.2, created_at=now - timedelta(minutes=1),
                  message=json.dumps({"not_run": "episodes.check-data-updates is already running"}))
    JobLog.create(run_id="c", job_class="series_data", message_id="m-3", queue="data", status="deferred",
                  error_code="ERR_RATE_LIMIT", created_at=now, message="over the shared series_api budget")
    page = admin_client.get("/admin/").text
    runs = re.search(r'id="dashboard-sweep-runs">(.*?)</table>', page, re.S).group(1)
    cells = [" ".join(re.sub(r"<[^>]+>", " ", c).split()) for c in re.findall(r"<td[^>]*>(.*?)</td>", runs, re.S)]
    assert cells[0] == "episodes.check-data-updates (cli)" and cells[2] == "not run: another run was in progress"
    assert cells[3] == "series.import-missing-data" and cells[5:10] == ["success", "12", "10", "2", "1.50"]
    budget = re.search(r'id="series-budget">(.*?)</table>', page, re.S).group(1)
    assert "0 of 20" in budget and "20/s (SERIES_API_RATE)" in budget
    assert re.search(r"deferred over budget \(1 h\)</td><td[^>]*>1<", budget)


def test_job_statistics_page(admin_client, db):
    JobLog.create(run_id="a", job_class="series_data", message_id="m-1", queue="data", status="success",
                  duration_seconds=0.25)
    JobLog.create(run_id="b", job_class="series_data", message_id="m-2", queue="data", status="success",
                  duration_seconds=0.75, created_at=utcnow() - timedelta(days=3))
    page = admin_client.get("/admin/job-stats/").text
    row = re.search(r"<tr>\s*<td><a[^>]*>series_data</a></td>(.*?)</tr>", page, re.S).group(1)
    numbers = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
    assert numbers[0] == "1" and numbers[1] == "1" and numbers[-1] == "0.250"  # today; 24 h; average
    week = admin_client.get("/admin/job-stats/?window=7+d").text
    assert "0.500" in week
    assert admin_client.get("/admin/job-stats/?window=<script>").status_code == 200


def test_a_series_links_to_its_episodes_and_the_page_shows_a_running_sweep(admin_client, rows):
    stale = rows[2]
    mine = Episode.create(series=stale, tvdb_id=301)
    Episode.create(series=rows[3], tvdb_id=401)
    detail = admin_client.get(f"/admin/series/details/?id={stale.id}").text
    assert f'href="/admin/episodes/?flt0_series_equals={stale.id}">1 episode(s)</a>' in detail
    assert listed(admin_client, "/admin/episodes/", f"flt0_series_equals={stale.id}") == [mine.id]
    page = admin_client.get("/admin/series/").text
    assert 'data-live="series-summary"' in page and "Run series.check-data-updates now" in page
    with ops.sweep_lock("series.check-data-updates"):
        page = admin_client.get("/admin/series/").text
        assert "series.check-data-updates running (" in page and "Run series.check-data-updates now" not in page
    assert "running (" not in admin_client.get("/admin/episodes/").text
