"""The panel in a real browser (Debian's chromium through Playwright), served by waitress,
with a real worker and the OpenAI simulator: log in, filter the job logs by error code,
select two failed plans, retry them, and see them generated.
"""
from __future__ import annotations

import os
import re
import threading

import pytest

import actors.workouts_retry  # noqa: F401  (declares the panel's background actor before the worker starts)
from core.net import free_port
from db.models.jobs import JobLog
from db.models.workouts import WorkoutPlan
from tests.helpers import wait_for
from tests.panel import PASSWORD, browser_log_in, statuses

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
# Skipped only outside CI (a plain `pytest` without tests/run.sh); in CI a missing browser fails.
# Every browser module is one xdist group: one worker runs them all, on one `chromium` (conftest.py).
pytestmark = [pytest.mark.skipif(not os.path.exists(CHROMIUM) and not os.environ.get("CI"),
                                 reason="needs Debian's chromium (tests/run.sh installs it)"),
              pytest.mark.xdist_group("chromium")]


@pytest.fixture
def server(db, broker, settings):
    import waitress

    from admin.app import create_app

    port = free_port()
    web = waitress.create_server(create_app(settings), host="127.0.0.1", port=port, threads=4)
    thread = threading.Thread(target=web.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    web.close()
    thread.join(5)


@pytest.fixture
def new_context(chromium, server):
    """Opens a browser context on `server` (cookies, storage and scripts of its own) for this
    test; each is closed when the test ends."""
    opened = []

    def new(**options):
        opened.append(chromium.new_context(base_url=server, **options))
        return opened[-1]

    yield new
    for context in opened:
        context.close()


@pytest.fixture
def page(new_context):
    context = new_context()
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # the actions' "are you sure?"
    return page


@pytest.fixture
def failures(db, broker, worker, openai_sim):
    """Plans whose generation failed for real: the simulator refused the key (ERR_AUTH, in JobLog too)."""
    from actors.accounts import create_account
    from actors.workouts import create_plan, dispatch
    from db.models.workouts import User

    create_account("ops@example.com", PASSWORD, "admin")
    openai_sim.control(fail={"401": 1.0})
    plans = [create_plan(User.create(email=f"b{i}@x.io").id, 1, "mobility") for i in range(3)]
    for plan in plans:
        dispatch(plan.user_id, plan.id)
    wait_for(lambda: all(statuses(p) == ["failed"] for p in plans), timeout=30, message="failed plans")
    wait_for(lambda: JobLog.select().where(JobLog.error_code == "ERR_AUTH").count() == 3, timeout=10,
             message="their JobLog rows")
    openai_sim.control(fail={})
    return plans


def test_log_in_filter_and_retry_two_failed_plans(page, failures, openai_sim):
    calls_before = openai_sim.stats()["requests"]
    JobLog.create(run_id="ok-1", job_class="generate_user_workout_plan", message_id="m-ok", queue="workouts",
                  status="success")
    page.goto("/admin/jobs/")
    assert "/admin/login" in page.url
    page.fill("input[name=email]", "ops@example.com")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/admin/jobs/$"))
    everything = page.locator("td.col-status").count()
    assert everything >= 4

    # filter the job logs by error code with Flask-Admin's own filter UI
    page.click("text=Add Filter")
    page.click(".field-filters >> text=Error code")
    page.click("#filter_form .select2-container.filter-val a.select2-choice")  # select2, as a person would
    page.click("#select2-drop .select2-result-label:text-is('ERR_AUTH')")
    page.click("#filter_form button[type=submit]")
    page.wait_for_url(re.compile(r".*flt\d+_error_code_equals=ERR_AUTH"))
    codes = page.locator("td.col-error_code").all_inner_texts()
    assert len(codes) >= 3 and set(codes) == {"ERR_AUTH"} and len(codes) < everything

    # select two failed plans and retry them
    page.click("text=Failed plans")
    page.wait_for_url(re.compile(r".*/admin/failed-plans/$"))
    boxes = page.locator("input.action-checkbox")
    assert boxes.count() == 3
    chosen = [int(boxes.nth(i).get_attribute("value")) for i in (0, 1)]
    boxes.nth(0).check()
    boxes.nth(1).check()
    page.click("text=With selected")
    assert page.inner_text("[data-model-action=retry]") == "Retry selected (2)"  # the count on the action
    page.click("text=Retry selected")
    # ERR_AUTH is permanent: a page says how many will fail again and asks before anything is done
    assert page.inner_text("#permanent-warning") == "will fail again: ERR_AUTH ×2"
    assert [WorkoutPlan.get_by_id(i).status for i in chosen] == ["failed", "failed"]
    page.click("#confirm-anyway")
    page.wait_for_selector(".alert-success")
    assert "dispatched 2 generation job(s)" in page.inner_text(".alert-success")

    chosen_plans = [WorkoutPlan.get_by_id(i).plan_id for i in chosen]
    wait_for(lambda: [WorkoutPlan.get_by_id(i).status for i in chosen] == ["generated", "generated"], timeout=30,
             message="the two retried days generated by the worker")
    page.reload()
    assert page.locator("input.action-checkbox").count() == 1  # only the plan left alone is still failed
    for plan_id in chosen_plans:
        assert page.locator(f"td.col-plan a[href$='flt0_plan_equals={plan_id}']").count() == 0
    assert openai_sim.stats()["requests"] - calls_before == 2  # one call a retried day


def _shot(page, name: str) -> None:
    """A screenshot of the page when FLEET_TEST_SCREENSHOTS is set, to look at the panel."""
    folder = os.environ.get("FLEET_TEST_SCREENSHOTS")
    if folder:
        page.screenshot(path=os.path.join(folder, f"{name}.png"), full_page=True)


def _set_visibility(page, state: str) -> None:
    page.evaluate("""state => {
        Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => state});
        document.dispatchEvent(new Event('visibilitychange'));
    }""", state)


# A page polls every 5 s; a bound, not a timing: the browser group runs while the suite's longest
# modules keep both cores busy, and twice in a full run a refresh was not seen within 20 s
LIVE_WAIT = 60_000


def test_pages_refresh_themselves_while_visible(page, failures, broker):
    """The dashboard and the job logs show new work without a reload, and stop polling while hidden."""
    from core.dead_letters import list_dead_letters

    browser_log_in(page, "ops@example.com")
    page.wait_for_selector("#worker-list")  # the test's worker, with host, pid, queues and threads
    _shot(page, "dashboard")
    before = int(page.inner_text("#status-counts tr:has-text('success') td.text-right"))
    for n in range(3):
        JobLog.create(run_id=f"live-{n}", job_class="generate_user_workout_plan", message_id=f"live-{n}",
                      queue="workouts", status="success")
    page.wait_for_function(
        "n => Number(document.querySelector('#status-counts tr:nth-child(2) td.text-right').innerText) >= n",
        arg=before + 3, timeout=LIVE_WAIT)
    assert page.evaluate("window.fleetLive.polling()")

    _set_visibility(page, "hidden")
    assert not page.evaluate("window.fleetLive.polling()")
    _set_visibility(page, "visible")
    assert page.evaluate("window.fleetLive.polling()")

    page.goto("/admin/jobs/")
    rows = page.locator("table.model-list tbody tr").count()
    JobLog.create(run_id="live-new", job_class="generate_user_workout_plan", message_id="live-new", queue="workouts",
                  status="failed", error_code="ERR_RATE_LIMIT")
    page.wait_for_function("n => document.querySelectorAll('table.model-list tbody tr').length > n", arg=rows,
                           timeout=LIVE_WAIT)
    assert page.locator("td.col-message_id a[title^='live-new ']").count() == 1
    _shot(page, "job_logs")
    page.click("td.col-message_id a[title^='live-new '] >> xpath=ancestor::tr//a[contains(@href, 'details')]")
    page.wait_for_selector("#retry-job")
    _shot(page, "job_details")

    page.goto("/admin/failed-plans/")
    assert "(3 day(s) in 3 plan(s))" in page.inner_text("#retry-matching")
    _shot(page, "failed_plans")
    page.goto("/admin/health/")
    _shot(page, "health")
    if list_dead_letters(broker):
        page.goto("/admin/dead-letters/")
        _shot(page, "dead_letters")
        page.click("a.fleet-id >> nth=0")
        page.wait_for_selector("#dead-letter")
        _shot(page, "dead_letter")
