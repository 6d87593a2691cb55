"""Bad input to the panel never gives a 500: numbers past 64 bits, hundreds of filters,
oversized searches and bodies get an empty list or a message (Flask test client; the same
cases over real HTTP are in tests/attack_panel.py)."""
from __future__ import annotations

import pytest

from tests.attack_panel import OVERSIZED
from tests.panel import csrf_token, failed_plan, flashes, joblog, statuses

HUGE = str(10**23)


@pytest.mark.parametrize("path", [p for p in OVERSIZED if p.startswith(("/admin/jobs/?", "/admin/failed-plans/?"))]
                         + [f"/admin/failed-plans/?flt0_plan_equals=-{HUGE}"])
def test_oversized_list_input_gives_a_list_or_a_message(admin_client, db, path):
    failed_plan("o@x.io")
    joblog(status="failed")
    response = admin_client.get(path)
    assert response.status_code == 200, response.text[:300]


def test_three_hundred_filters_are_refused_with_a_message(admin_client, db):
    joblog(status="failed")
    page = admin_client.get("/admin/jobs/?" + "&".join(f"flt{i}_status_equals=failed" for i in range(300))).text
    assert any(m.startswith("Too many filters (300); at most 20") for m in flashes(page))


@pytest.mark.parametrize("path", [f"/admin/jobs/details/?id={HUGE}", f"/admin/failed-plans/details/?id={HUGE}",
                                  f"/admin/jobs/details/?id=-{HUGE}"])
def test_details_of_a_huge_id_say_it_does_not_exist(admin_client, db, path):
    response = admin_client.get(path, follow_redirects=True)
    assert response.status_code == 200 and "Record does not exist." in flashes(response.text)


def test_an_action_on_a_huge_row_id_changes_nothing(admin_client, broker):
    plan = failed_plan("h@x.io")
    response = admin_client.post("/admin/failed-plans/action/", data={
        "action": "retry", "rowid": [HUGE, "abc"], "csrf_token": csrf_token(admin_client, "/admin/")},
        follow_redirects=True)
    assert response.status_code == 200
    assert "Retrying 0 day(s) of 0 plan(s): dispatched 0 generation job(s)." in flashes(response.text)
    assert statuses(plan) == ["failed"]


def test_retry_all_matching_a_huge_plan_id_retries_nothing(admin_client, broker):
    plan = failed_plan("m@x.io")
    response = admin_client.post(f"/admin/failed-plans/retry-matching/?flt0_plan_equals={HUGE}",
                                 data={"csrf_token": csrf_token(admin_client, "/admin/")}, follow_redirects=True)
    assert response.status_code == 200
    assert "The filter is not valid; nothing was retried." in flashes(response.text)
    assert statuses(plan) == ["failed"] and broker.client.hlen("fleet:panel.msgs") == 0


def test_an_oversized_body_is_413(app):
    response = app.test_client().post("/admin/login", data={"email": "x" * (2 * 1024 * 1024)})
    assert response.status_code == 413
