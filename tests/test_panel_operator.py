"""What an operator needs on the pages: counts before a bulk retry, a failed job retried from
its details, links from a job to its plan, dead letters with details, a filter and delete all."""
from __future__ import annotations

import re

import actors.workouts  # noqa: F401
from db.models.jobs import JobLog
from tests.panel import csrf_token, dead_letter, dead_letter_ids, failed_plan, flashes, joblog


def test_retry_all_matching_shows_days_and_plans_before_the_click(admin_client, db):
    failed_plan("a@x.io", days=3, code="ERR_API_TIMEOUT")
    failed_plan("b@x.io", days=2, code="ERR_API_TIMEOUT")
    failed_plan("c@x.io", days=1, code="ERR_AUTH")
    page = admin_client.get("/admin/failed-plans/?flt0_error_code_equals=ERR_API_TIMEOUT").text
    form = re.search(r'<form [^>]*id="retry-matching"[^>]*>', page, re.S).group(0)
    assert 'data-days="5"' in form and 'data-plans="2"' in form
    assert "Retry 5 failed day(s) in 2 plan(s) that match the filter" in form
    assert "Retry all matching the filter (5 day(s) in 2 plan(s))" in page
    everything = admin_client.get("/admin/failed-plans/").text
    assert "(6 day(s) in 3 plan(s))" in everything
    bad = admin_client.get("/admin/failed-plans/?flt0_plan_equals=abc").text
    assert "The filter is not valid: nothing to retry." in bad


def test_job_logs_show_colours_message_ids_and_one_line_times(admin_client, db):
    joblog(1, status="failed", error_code="ERR_AUTH")
    page = admin_client.get("/admin/jobs/").text
    assert '<span class="badge fleet-status fleet-status-failed">failed</span>' in page
    assert 'href="/admin/jobs/?flt0_message_id_equals=msg-1"' in page
    css = admin_client.get("/static/fleet.css").text
    assert "td.col-created_at" in css and "nowrap" in css


def test_a_workout_job_links_to_its_plan(admin_client, db):
    plan = failed_plan("l@x.io")
    row = joblog(1, status="failed", args=f'{{"args": [{plan.user_id}, {plan.id}], "kwargs": {{}}}}')
    page = admin_client.get(f"/admin/jobs/details/?id={row.id}").text
    assert f'href="/admin/failed-plans/?flt0_plan_equals={plan.id}"' in page and f"Plan #{plan.id}" in page


def test_retry_a_failed_job_resends_its_arguments_through_the_unique_check(admin_client, broker):
    plan = failed_plan("r@x.io")
    row = joblog(1, status="failed", args=f'{{"args": [{plan.user_id}, {plan.id}], "kwargs": {{}}}}')
    page = admin_client.get(f"/admin/jobs/details/?id={row.id}").text
    assert 'id="retry-job"' in page
    token = csrf_token(admin_client, f"/admin/jobs/details/?id={row.id}")
    done = admin_client.post("/admin/jobs/retry/", data={"id": row.id, "csrf_token": token}, follow_redirects=True)
    assert any(m.startswith("Sent generate_user_workout_plan again with the same arguments") for m in flashes(done.text))
    assert broker.client.hlen("fleet:workouts.msgs") == 1
    again = admin_client.post("/admin/jobs/retry/", data={"id": row.id, "csrf_token": token}, follow_redirects=True)
    assert "An identical generate_user_workout_plan job is already queued or running; nothing was sent." in flashes(again.text)
    assert broker.client.hlen("fleet:workouts.msgs") == 1


def test_retry_a_failed_job_requeues_itsdead_letter(admin_client, broker):
    dead_letter(broker, "dl")
    message_id = dead_letter_ids(broker)[0]
    row = joblog(1, status="failed", job_class="ping", queue="fleet", message_id=message_id,
                 args='{"args": ["dl"], "kwargs": {}}')
    token = csrf_token(admin_client, "/admin/")
    done = admin_client.post("/admin/jobs/retry/", data={"id": row.id, "csrf_token": token}, follow_redirects=True)
    assert f"Requeued the dead letter of message {message_id} with a fresh retry budget." in flashes(done.text)
    assert dead_letter_ids(broker) == [] and broker.client.llen("fleet:fleet") == 1


def test_only_a_failed_job_offers_retry_and_viewers_never(admin_client, viewer_client, db):
    ok = joblog(1, status="success")
    failed = joblog(2, status="failed")
    assert 'id="retry-job"' not in admin_client.get(f"/admin/jobs/details/?id={ok.id}").text
    assert 'id="retry-job"' not in viewer_client.get(f"/admin/jobs/details/?id={failed.id}").text
    forged = viewer_client.post("/admin/jobs/retry/", data={"id": failed.id,
                                                             "csrf_token": csrf_token(viewer_client, "/admin/")})
    assert forged.status_code == 403


def test_dead_letter_details_show_the_attempts_tracebacks(admin_client, broker):
    from core.dead_letters import remember_error

    dead_letter(broker, "tb")
    message_id = dead_letter_ids(broker)[0]
    remember_error(broker, message_id, "ERR_INTERNAL", "KeyError: 'x'")
    JobLog.create(run_id="r", job_class="ping", message_id=message_id, queue="fleet", status="failed",
                  error_code="ERR_INTERNAL", traceback="Traceback (most recent call last):\n  KeyError: 'x'")
    listing = admin_client.get("/admin/dead-letters/").text
    assert f'href="/admin/dead-letters/{message_id}/"' in listing
    page = admin_client.get(f"/admin/dead-letters/{message_id}/").text
    assert "Traceback (most recent call last):" in page and "ERR_INTERNAL" in page and "[&#34;tb&#34;]" in page
    assert admin_client.get("/admin/dead-letters/no-such-id/").status_code == 404


def test_dead_letters_filter_and_delete_all_with_the_count(admin_client, broker):
    from core.dead_letters import remember_error

    for nonce in ("one", "two", "three"):
        dead_letter(broker, nonce)
    ids = dead_letter_ids(broker)
    remember_error(broker, ids[0], "ERR_AUTH", "no")
    page = admin_client.get("/admin/dead-letters/?error_code=ERR_AUTH").text
    assert "1 matching (of the newest" in page and page.count('name="rowid"') == 1
    assert "Delete the 3 dead letter(s) of every queue for good" in admin_client.get("/admin/dead-letters/").text
    assert admin_client.get("/admin/dead-letters/?actor=nobody").text.count('name="rowid"') == 0
    token = csrf_token(admin_client, "/admin/dead-letters/")
    done = admin_client.post("/admin/dead-letters/delete-all/", data={"csrf_token": token}, follow_redirects=True)
    assert "Deleted 3 dead letter(s)." in flashes(done.text) and dead_letter_ids(broker) == []
