"""The Accounts page in a real browser (chromium through Playwright, the app under waitress): an
admin creates an account whose generated password is shown once, the new operator logs in
with it in another browser, cannot open the Accounts page, and is logged out when the admin
disables the account; the Audit log page shows both actions. No CSP violation on the way."""
from __future__ import annotations

import re

from tests.panel import PASSWORD, browser_log_in
from tests.test_browser import new_context, pytestmark, server  # noqa: F401  (fixtures; the browser modules' marks)
from tests.test_browser_csp import RECORD_VIOLATIONS


def _log_in(context, email: str, password: str):
    page = context.new_page()
    page.console = []
    page.on("console", lambda message: page.console.append(message.text))
    page.on("dialog", lambda dialog: dialog.accept())
    browser_log_in(page, email, password)
    return page


def test_an_admin_creates_and_disables_an_account_in_the_browser(new_context, db):
    from actors.accounts import create_account

    create_account("boss@example.com", PASSWORD, "admin")
    contexts = [new_context() for _ in range(2)]
    for context in contexts:
        context.set_default_timeout(10_000)
        context.add_init_script(RECORD_VIOLATIONS)
    admin = _log_in(contexts[0], "boss@example.com", PASSWORD)
    admin.click("a.dropdown-toggle:has-text('Admin')")
    admin.click("a:has-text('Accounts')")
    admin.wait_for_url(re.compile(r".*/admin/accounts/$"))
    admin.fill("#new-email", "newbie@example.com")
    admin.select_option("#create-account select[name=role]", "viewer")
    admin.click("#create-account button[type=submit]")
    password = admin.locator("#secret").inner_text().strip()
    assert len(password) >= 12
    assert admin.locator("tr[data-account='newbie@example.com']").count() == 1

    newbie = _log_in(contexts[1], "newbie@example.com", password)
    assert "newbie@example.com (viewer)" in newbie.locator("#operator").inner_text()
    assert newbie.goto("/admin/accounts/").status == 403

    admin.goto("/admin/accounts/")
    admin.click("tr[data-account='newbie@example.com'] button:has-text('Disable')")
    admin.wait_for_selector("text=Disabled newbie@example.com; its sessions have ended.")
    newbie.goto("/admin/jobs/")
    assert "/admin/login" in newbie.url

    admin.goto("/admin/audit/")
    rows = admin.locator("table.model-list tbody tr")
    assert rows.count() == 2
    text = admin.locator("table.model-list").inner_text()
    assert "accounts.disable" in text and "accounts.create" in text and "boss@example.com" in text
    violations = [admin.evaluate("window.__violations"), newbie.evaluate("window.__violations")]
    assert violations == [[], []]
