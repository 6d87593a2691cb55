"""In a real browser (Debian's chromium through Playwright), served by waitress, with a real
worker and the OpenAI simulator: start a translation from the panel's form, land on its batch
page, and watch it reach 100 % while the page updates itself (no reload, no navigation)."""
from __future__ import annotations

import re

from db.models.batches import Batch
from tests.helpers import wait_for
from tests.panel import PASSWORD
from tests.test_browser import new_context, page, pytestmark, server  # noqa: F401  (fixtures; the browser modules' marks)

FILES = 6
LATENCY_MS = 700  # each file a request: several seconds of visible progress


def test_start_a_translation_from_the_form_and_watch_it_reach_100_percent(page, worker, openai_sim, tmp_path):
    from actors.accounts import create_account

    create_account("translator@example.com", PASSWORD, "admin")
    openai_sim.control(latency_ms=LATENCY_MS)
    uploads = []
    for n in range(FILES):
        path = tmp_path / f"kapitel{n}.md"
        path.write_text(f"# Kapitel {n}\n\nHallo {{name}}, willkommen in Kapitel {n}.\n")
        uploads.append(str(path))

    page.goto("/admin/login")
    page.fill("input[name=email]", "translator@example.com")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.goto("/admin/batches/")
    page.click("text=New translation")
    page.wait_for_url(re.compile(r".*/admin/translations/$"))
    page.set_input_files("input[name=files]", uploads)
    page.select_option("select[name=source]", "de")
    page.select_option("select[name=target]", "nl")
    page.click("#translation-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/admin/batches/[0-9a-f-]{36}/$"))
    batch_page = page.url
    assert "Translation of 6 file(s) started." in page.inner_text(".alert-success")

    navigations = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    page.evaluate("window.fleetMarker = 'still the same page'")
    first = page.inner_text("#batch-progress")
    assert page.is_visible("#batch-cancel") and not page.is_visible("#batch-retry")
    assert first != "100 %", "the batch ended before its page was seen"
    seen = {first}

    def progressed():
        seen.add(page.inner_text("#batch-progress"))
        return "100 %" in seen
    wait_for(progressed, timeout=60, interval=0.2, message="the page to show 100 %")
    page.wait_for_function("document.getElementById('batch').dataset.finished === '1'")

    assert navigations == [] and page.url == batch_page
    assert page.evaluate("window.fleetMarker") == "still the same page"  # a reload would have lost it
    assert len(seen) >= 2  # it moved on the page
    assert page.inner_text("#batch-status") == "completed"
    assert not page.is_visible("#batch-cancel") and not page.is_visible("#batch-resume")  # they do not apply to an ended batch
    assert not page.is_visible("#batch-retry")  # nothing failed
    assert page.inner_text("[data-show=progress]") == "6 of 6"
    statuses = page.locator("#batch-items .fleet-item-succeeded").all_inner_texts()
    assert statuses == ["succeeded"] * FILES
    assert page.locator("#batch-items a:text-is('download')").count() == FILES
    batch = Batch.get()
    assert (batch.status, batch.succeeded, batch.created_by) == ("completed", FILES, "translator@example.com")
    page.screenshot(path=str(tmp_path / "batch.png"), full_page=True)
