"""The panel at 1,280 px in a real browser (chromium through Playwright, the app under waitress):
with long values in every column, no table is wider than its container and the nav is one line;
the 24 h chart is not one bar when all activity is recent."""
from __future__ import annotations

import os
import re
import uuid

import pytest

from db.models import utcnow
from db.models.alerts import AlertState
from tests.panel import PASSWORD, browser_log_in, dead_letter, dead_letter_ids, failed_plan, joblog
from tests.test_browser import new_context, pytestmark, server  # noqa: F401  (fixtures; the browser modules' marks)

PAGES = ["/admin/", "/admin/jobs/", "/admin/failed-plans/", "/admin/series/", "/admin/episodes/",
         "/admin/job-stats/", "/admin/batches/", "/admin/error-codes/", "/admin/dead-letters/",
         "/admin/schedule/", "/admin/alerts/", "/admin/health/"]

# (table, its width, its container's width) for each table wider than its container, and the
# distinct tops of the nav's items (one line: one top)
MEASURE = """() => ({
  wide: [...document.querySelectorAll('table')].filter(t => t.offsetParent !== null)
    .map(t => [t.id || t.className, t.scrollWidth, t.parentElement.clientWidth])
    .filter(([, table, box]) => table > box + 1),
  pageWidth: document.documentElement.scrollWidth,
  navTops: [...new Set([...document.querySelectorAll('nav.navbar .navbar-nav > li, nav.navbar form')]
    .map(e => Math.round(e.getBoundingClientRect().top)))],
})"""

LONG = "a-rather-long-value-" * 6


def _long_rows(broker) -> None:
    from actors.accounts import create_account
    from actors.batches import create_batch
    from core.dead_letters import remember_error
    from db.models.series import Episode, Series

    create_account("wide-operator-with-a-long-address@example.com", PASSWORD, "admin")
    for n in range(5):
        joblog(n, job_class="import_missing_episodes_data_of_a_long_name", status="failed",
               error_code="ERR_API_UNAVAILABLE", message=LONG, trace_id=uuid.uuid4().hex,
               message_id=str(uuid.uuid4()), worker=f"worker-host-{LONG[:40]}:12345", duration_seconds=12.5)
    failed_plan(f"{LONG[:60]}@example.com", days=2, code="ERR_NOT_FOUND", message=LONG)
    series = Series.create(tvdb_id=79126, name=LONG, error_code="ERR_NOT_FOUND", error_message=LONG,
                           failed_at=utcnow())
    Episode.create(tvdb_id=1, series=series, season=1, number=1, name=LONG, error_code="ERR_NOT_FOUND",
                   error_message=LONG, failed_at=utcnow())
    create_batch("workouts_retry", LONG, [f"Plan #{n}" for n in range(3)], created_by=f"{LONG[:50]}@example.com")
    for rule in ("queue-backlog", "schedule-missed"):  # the header's "2 alerts firing" takes room in the nav
        AlertState.create(rule=rule, subject="", kind="queue", severity="critical", state="firing", summary=LONG,
                          since=utcnow())
    dead_letter(broker, LONG)
    remember_error(broker, dead_letter_ids(broker)[0], "ERR_NOT_FOUND", LONG)


@pytest.fixture
def wide_page(new_context, db, broker):
    _long_rows(broker)
    context = new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)  # a busy machine
    page = context.new_page()
    browser_log_in(page, "wide-operator-with-a-long-address@example.com")
    return page


def test_every_table_fits_a_1280_px_window_and_the_nav_is_one_line(wide_page):
    folder = os.environ.get("FLEET_TEST_SCREENSHOTS")
    for path in PAGES:
        assert wide_page.goto(path).status == 200, path
        seen = wide_page.evaluate(MEASURE)
        assert seen["wide"] == [], (path, seen["wide"])
        assert seen["pageWidth"] <= 1280, (path, seen["pageWidth"])
        assert max(seen["navTops"]) - min(seen["navTops"]) < 20, (path, seen["navTops"])  # a second line: ~40 px
        if folder:
            wide_page.screenshot(path=os.path.join(folder, path.strip("/").replace("/", "_") + ".png"))
    wide_page.goto("/admin/jobs/")
    wide_page.locator("td.list-buttons-column a").first.click()  # a job's own page
    wide_page.wait_for_url(re.compile(r".*/admin/jobs/details/.*"))
    seen = wide_page.evaluate(MEASURE)
    assert seen["wide"] == [] and max(seen["navTops"]) - min(seen["navTops"]) < 20, seen


def test_the_chart_shows_recent_activity_in_minute_bars(wide_page):
    wide_page.goto("/admin/")
    chart = wide_page.locator("#chart")
    assert chart.get_attribute("data-bar") == "minute"  # all of it in the last half hour
    heights = [float(h) for h in wide_page.eval_on_selector_all("#chart rect.failed", "rs => rs.map(r => r.getAttribute('height'))")]
    assert len(heights) == 30 and max(heights[-2:]) > 0  # the last bars, not one of 24 hours
