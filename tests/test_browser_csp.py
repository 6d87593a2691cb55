"""The panel's Content-Security-Policy in a real browser (chromium through Playwright, the app
under waitress): every main page, logged in as an admin, runs with no CSP violation, and the
script the templates moved out of line still works (confirmations, the actions menu, filters)."""
from __future__ import annotations

import pytest

from tests.panel import PASSWORD, browser_log_in, joblog
from tests.test_browser import new_context, pytestmark, server  # noqa: F401  (fixtures; the browser modules' marks)

PAGES = ["/admin/", "/admin/jobs/", "/admin/failed-plans/", "/admin/series/", "/admin/episodes/",
         "/admin/job-stats/", "/admin/batches/", "/admin/translations/", "/admin/error-codes/",
         "/admin/dead-letters/", "/admin/schedule/", "/admin/alerts/",
         "/admin/health/", "/admin/accounts/", "/admin/audit/", "/admin/login"]

# Every violation the page sees, whether or not it reached the console.
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", function (e) {
  window.__violations.push(e.violatedDirective + " " + (e.blockedURI || "") + " " + (e.sample || ""));
});
"""


@pytest.fixture
def admin_page(new_context, db):
    """A chromium page logged in as an admin; `page.asked` holds the confirmations it saw
    (all dismissed), `page.console` its console lines."""
    from actors.accounts import create_account

    create_account("csp@example.com", PASSWORD, "admin")
    context = new_context()
    context.set_default_timeout(10_000)
    context.add_init_script(RECORD_VIOLATIONS)
    page = context.new_page()
    page.console, page.asked = [], []
    page.on("console", lambda message: page.console.append(message.text))
    page.on("dialog", lambda dialog: (page.asked.append(dialog.message), dialog.dismiss()))
    browser_log_in(page, "csp@example.com")
    return page


def _violations(page) -> list[str]:
    return page.evaluate("window.__violations") + [m for m in page.console if "Content Security Policy" in m]


def test_the_main_pages_run_without_csp_violations(admin_page):
    seen = {}
    for path in PAGES:
        response = admin_page.goto(path)
        assert response.status in (200, 302), (path, response.status)
        if path != "/admin/login":
            assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        admin_page.wait_for_load_state("load")
        seen[path] = _violations(admin_page)
        admin_page.console.clear()
        if path == "/admin/schedule/":
            history = admin_page.locator("a[href*='/admin/schedule/history/']").first.get_attribute("href")
            admin_page.goto(history)
            seen[history] = _violations(admin_page)
    assert {p: v for p, v in seen.items() if v} == {}


def test_filters_actions_and_confirmations_work_under_the_csp(admin_page):
    joblog(1, status="failed", error_code="ERR_AUTH")
    admin_page.goto("/admin/jobs/")
    admin_page.click("text=Add Filter")
    admin_page.click(".field-filters >> text=Time (UTC)")  # a date range picker: builds its own markup
    admin_page.click("text=Add Filter")
    admin_page.click(".field-filters >> text=Status")
    assert admin_page.locator("#filter_form .filter-val").count() >= 2
    assert _violations(admin_page) == []

    admin_page.goto("/admin/failed-plans/")
    admin_page.click("text=With selected")
    admin_page.click("[data-model-action=retry]")
    assert admin_page.asked[-1] == "Please select at least one record."  # Flask-Admin's actions.js ran

    admin_page.goto("/admin/schedule/")
    admin_page.locator("form[data-confirm] button").first.click()
    assert admin_page.asked[-1].startswith("Run ") and admin_page.url.endswith("/admin/schedule/")
    assert not admin_page.locator(".alert-success").count()  # dismissed: nothing was sent
    assert _violations(admin_page) == []
