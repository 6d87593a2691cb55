"""The operator panel through Flask's test client: access, CSRF, escaping, filters, pages, actions.

Real parts: the test Redis (broker, throttle counters, breakers), the SQLite database,
Dramatiq's own dead-letter machinery. The background jobs run in tests/test_panel_bulk.py.
"""
from __future__ import annotations

import csv
import io
import re
from datetime import timedelta

import pytest

import actors.workouts_retry  # noqa: F401  (declares the panel's background actor before the worker starts)
from db.models import utcnow
from db.models.jobs import JobLog
from db.models.workouts import WorkoutPlan
from tests.panel import (
    PASSWORD,
    SCRIPT,
    csrf_token,
    day_ids,
    dead_letter,
    dead_letter_ids,
    failed_plan,
    flashes,
    joblog,
    log_in,
    rows,
    statuses,
)

# -- access ----------------------------------------------------------------------------------

PAGES = ["/admin/", "/admin/jobs/", "/admin/jobs/details/?id=1", "/admin/jobs/export/csv/", "/admin/failed-plans/",
         "/admin/error-codes/", "/admin/dead-letters/", "/admin/health/", "/admin/batches/", "/admin/translations/",
         "/admin/batches/abc/"]


@pytest.mark.parametrize("path", PAGES)
def test_anonymous_is_sent_to_the_login_page(app, path):
    response = app.test_client().get(path)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/admin/login?next=")


def test_anonymous_api_is_401_and_health_is_public(app):
    client = app.test_client()
    assert client.get("/api/batches/abc").status_code == 401
    assert client.get("/api/batches").status_code == 401
    assert client.get("/healthz").status_code == 200
    assert client.get("/admin/login").status_code == 200
    assert client.get("/admin/static/bootstrap/bootstrap4/css/bootstrap.min.css").status_code == 200
    assert client.get("/static/fleet.css").status_code == 200


def test_anonymous_post_is_refused_even_with_a_token(app):
    client = app.test_client()
    response = client.post("/admin/failed-plans/retry-matching/", data={"csrf_token": csrf_token(client)})
    assert response.status_code == 302 and "/admin/login" in response.headers["Location"]


def test_viewer_sees_everything_but_no_action(viewer_client, db):
    plan = failed_plan("v@x.io")
    joblog(status="failed", error_code="ERR_API_TIMEOUT")
    for path in PAGES[:-1]:
        assert viewer_client.get(path).status_code in (200, 503), path
    page = viewer_client.get("/admin/failed-plans/").text
    assert f"#{plan.id}" in page
    assert 'name="rowid"' not in page and "With selected" not in page and "Retry all matching" not in page
    codes = viewer_client.get("/admin/error-codes/").text
    assert "failed with this code" not in codes and 'method="post"' not in codes.split('id="error-codes"')[1]
    assert 'name="rowid"' not in viewer_client.get("/admin/dead-letters/").text


@pytest.mark.parametrize("path,data", [
    ("/admin/failed-plans/action/", {"action": "retry", "rowid": "1"}),
    ("/admin/failed-plans/action/", {"action": "reset", "rowid": "1"}),
    ("/admin/failed-plans/retry-matching/", {}),
    ("/admin/dead-letters/action/", {"action": "delete", "rowid": "x"}),
    ("/admin/dead-letters/requeue-all/", {}),
])
def test_a_viewers_forged_post_is_403(viewer_client, broker, path, data):
    plan = failed_plan("v@x.io")
    data = {**data, "csrf_token": csrf_token(viewer_client, "/admin/")}
    if data.get("rowid") == "1":
        data["rowid"] = str(day_ids(plan)[0])
    assert viewer_client.post(path, data=data).status_code == 403
    assert statuses(plan) == ["failed"]
    assert broker.client.hlen("fleet:workouts.msgs") == 0 and broker.client.hlen("fleet:panel.msgs") == 0


def test_a_post_without_csrf_token_is_refused(admin_client, broker):
    plan = failed_plan("c@x.io")
    for path, data in [("/admin/failed-plans/action/", {"action": "reset", "rowid": str(day_ids(plan)[0])}),
                       ("/admin/failed-plans/retry-matching/", {}), ("/admin/logout", {})]:
        assert admin_client.post(path, data=data).status_code == 400
    assert statuses(plan) == ["failed"]
    assert admin_client.get("/admin/").status_code == 200  # still logged in


def test_the_session_cookie_is_httponly_and_samesite(app):
    from actors.accounts import create_account

    create_account("c@example.com", PASSWORD, "admin")
    cookie = log_in(app.test_client(), "c@example.com").headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_repeated_failed_logins_for_one_account_get_429(app):
    from actors.accounts import create_account
    from admin import throttle

    create_account("t@example.com", PASSWORD, "admin")
    create_account("colleague@example.com", PASSWORD, "admin")
    client = app.test_client()
    for _ in range(throttle.MAX_FAILURES):
        assert log_in(client, "t@example.com", "wrong-password").status_code == 401
    blocked = log_in(client, "t@example.com")  # even the right password waits now
    assert blocked.status_code == 429 and "Too many failed logins" in blocked.text
    assert 0 < int(blocked.headers["Retry-After"]) <= throttle.WINDOW + 1
    # another operator at the same address is not locked out by someone else's guesses
    assert log_in(app.test_client(), "colleague@example.com").status_code == 302


# -- escaping --------------------------------------------------------------------------------

def test_error_text_from_outside_is_escaped_everywhere(admin_client, broker):
    from core.dead_letters import remember_error

    row = joblog(status="failed", error_code="ERR_INVALID_RESPONSE", message=SCRIPT, traceback=SCRIPT,
                 args=f'["{SCRIPT}"]')
    failed_plan("e@x.io", message=SCRIPT)
    dead_letter(broker, "evil")
    remember_error(broker, dead_letter_ids(broker)[0], "ERR_INTERNAL", SCRIPT)
    for path in ["/admin/jobs/", f"/admin/jobs/details/?id={row.id}", "/admin/failed-plans/",
                 "/admin/dead-letters/"]:
        page = admin_client.get(path).text
        assert SCRIPT not in page, path
        assert "&lt;script&gt;alert(" in page, path


# -- job logs ----------------------------------------------------------------------------------

@pytest.fixture
def logs(db):
    now = utcnow()
    return [
        joblog(1, created_at=now - timedelta(minutes=30), status="success", trace_id="trace-a"),
        joblog(2, created_at=now - timedelta(minutes=20), status="failed", error_code="ERR_AUTH",
               message="OpenAI HTTP 401: invalid key", trace_id="trace-a"),
        joblog(3, created_at=now - timedelta(hours=5), status="retrying", error_code="ERR_API_TIMEOUT",
               message="OpenAI did not answer in time", job_class="fetch_series"),
        joblog(4, created_at=now - timedelta(days=3), status="failed", error_code="ERR_API_TIMEOUT",
               message="timeout again", job_class="fetch_series"),
    ]


def listed(client, query: str = "") -> list[str]:
    """Run ids of the job-log list, in order (the message id column is not shown; run-N ↔ msg-N)."""
    page = client.get("/admin/jobs/" + query)
    assert page.status_code == 200, page.text[:500]
    ids = re.findall(r"/admin/jobs/details/\?id=(\d+)", page.text)
    return [JobLog.get_by_id(int(i)).run_id for i in dict.fromkeys(ids)]


def test_job_logs_newest_first_with_filters_and_search(admin_client, logs):
    assert listed(admin_client) == ["run-2", "run-1", "run-3", "run-4"]
    assert listed(admin_client, "?flt0_error_code_equals=ERR_API_TIMEOUT") == ["run-3", "run-4"]
    assert listed(admin_client, "?flt0_status_equals=failed") == ["run-2", "run-4"]
    assert listed(admin_client, "?flt0_actor_equals=fetch_series") == ["run-3", "run-4"]
    assert listed(admin_client, "?flt0_trace_id_equals=trace-a") == ["run-2", "run-1"]
    assert listed(admin_client, "?flt0_error_code_empty=1") == ["run-1"]
    since = (utcnow() - timedelta(hours=6)).strftime("%Y-%m-%d %H:%M:%S")
    until = (utcnow() - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
    assert listed(admin_client, f"?flt0_time_utc_between={since} to {until}") == ["run-3"]
    assert listed(admin_client, f"?flt0_time_utc_greater_than={since}&flt1_status_equals=failed") == ["run-2"]
    assert listed(admin_client, "?search=invalid") == ["run-2"]


def test_actor_filter_offers_the_actors_in_the_logs(admin_client, logs):
    page = admin_client.get("/admin/jobs/").text
    groups = re.search(r'<div id="filter-groups-data" class="d-none">(.*?)</div>', page, re.S).group(1)
    assert "fetch_series" in groups and "generate_user_workout_plan" in groups


@pytest.mark.parametrize("query,shown", [
    ("?flt0_status_equals=bogus", "none"),
    ("?flt0_error_code_equals=ERR_NOPE", "none"),
    ("?flt0_actor_equals=%00%27%22", "none"),
    ("?search=%25%27%22", "none"),
    ("?flt0_time_utc_between=not-a-date", "message"),
    ("?flt0_time_utc_between=2024-05-02 00:00:00 to 2024-05-01 00:00:00", "message"),
    ("?flt0_time_utc_greater_than=2024-13-45 99:00:00", "message"),
    ("?flt0_unknown_filter=1", "all"),
    ("?page=-3", "all"),
    ("?page=abc&sort=99&desc=x", "all"),
    ("?page_size=100000", "all"),
])
def test_bad_filter_values_give_an_empty_list_or_a_message(admin_client, logs, query, shown):
    page = admin_client.get("/admin/jobs/" + query)
    assert page.status_code == 200
    if shown == "none":
        assert rows(page.text) == 0 and "There are no items in the table." in page.text
    elif shown == "message":  # the bad filter is left out, and the operator is told
        assert rows(page.text) == 4 and any(m.startswith("Invalid Filter Value") for m in flashes(page.text))
    else:
        assert rows(page.text) == 4


@pytest.mark.parametrize("path", ["/admin/jobs/details/?id=abc", "/admin/jobs/details/?id=999999",
                                  "/admin/failed-plans/details/?id=abc", "/admin/failed-plans/details/?id=1.5"])
def test_details_of_a_bad_or_unknown_id_say_so(admin_client, db, path):
    response = admin_client.get(path, follow_redirects=True)
    assert response.status_code == 200 and "Record does not exist." in flashes(response.text)


def test_job_log_details_show_traceback_and_redacted_arguments(admin_client, db):
    row = joblog(status="failed", error_code="ERR_AUTH", traceback="Traceback (most recent call last):\n  boom",
                 args='[1, "Authorization: Bearer abcdefghijklmnop1234"]')
    page = admin_client.get(f"/admin/jobs/details/?id={row.id}").text
    assert "Traceback (most recent call last):" in page and "boom" in page
    assert "abcdefghijklmnop1234" not in page and "Bearer ***" in page
    assert "The external API refused our credentials" in page  # the code's sentence


def test_csv_export_follows_the_filter(admin_client, logs):
    response = admin_client.get("/admin/jobs/export/csv/?flt0_error_code_equals=ERR_API_TIMEOUT")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    table = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["Message id"] for r in table] == ["msg-3", "msg-4"]
    assert {r["Error code"] for r in table} == {"ERR_API_TIMEOUT"}


def test_csv_export_defuses_formulas(admin_client, db):
    joblog(status="failed", error_code="ERR_INTERNAL", message="=HYPERLINK(\"http://evil\")")
    table = list(csv.DictReader(io.StringIO(admin_client.get("/admin/jobs/export/csv/").text)))
    assert table[0]["Message"].startswith("'=")


# -- failed plans ------------------------------------------------------------------------------

def test_failed_plans_list_shows_plan_user_day_code_sentence_and_message(admin_client, db):
    plan = failed_plan("f@x.io", days=2, code="ERR_QUOTA_EXCEEDED", message="insufficient_quota")
    WorkoutPlan.update(status="generated").where((WorkoutPlan.plan == plan) & (WorkoutPlan.day == 2)).execute()
    page = admin_client.get("/admin/failed-plans/").text
    assert rows(page) == 1
    assert f"#{plan.id}" in page and f"#{plan.user_id}" in page and "ERR_QUOTA_EXCEEDED" in page
    assert "quota or credit at the provider is used up" in page and "insufficient_quota" in page


def test_failed_plans_filters(admin_client, db):
    a = failed_plan("a@x.io", code="ERR_AUTH")
    b = failed_plan("b@x.io", code="ERR_API_TIMEOUT")
    c = failed_plan("a@x.io", code="ERR_API_TIMEOUT")
    WorkoutPlan.update(updated_at=utcnow() - timedelta(days=2)).where(WorkoutPlan.plan == c).execute()

    def plans(query):
        page = admin_client.get("/admin/failed-plans/" + query)
        assert page.status_code == 200
        return sorted(int(p) for p in re.findall(r'<td class="col-plan">\s*<a [^>]*>#(\d+)', page.text))

    assert plans("") == sorted([a.id, b.id, c.id])
    assert plans("?flt0_error_code_equals=ERR_API_TIMEOUT") == sorted([b.id, c.id])
    assert plans(f"?flt0_user_equals={a.user_id}") == sorted([a.id, c.id])
    assert plans(f"?flt0_plan_equals={b.id}") == [b.id]
    yesterday = (utcnow() - timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
    assert plans(f"?flt0_failed_utc_after={yesterday}") == sorted([a.id, b.id])
    assert plans(f"?flt0_failed_utc_before={yesterday}") == [c.id]
    assert plans("?flt0_plan_equals=abc") == sorted([a.id, b.id, c.id])  # ignored, with a message
    assert plans("?flt0_error_code_equals=ERR_UNKNOWN") == []


def test_reset_selected_sets_days_pending_and_generate_pending_dispatches_their_job(admin_client, broker):
    plan = failed_plan("r@x.io", days=3)
    ids = day_ids(plan)
    response = admin_client.post("/admin/failed-plans/action/", data={
        "action": "reset", "rowid": ids[:2], "csrf_token": csrf_token(admin_client, "/admin/failed-plans/")},
        follow_redirects=True)
    assert "2 day(s) reset to pending; no job dispatched yet: use “Generate pending”." in flashes(response.text)
    assert statuses(plan) == ["pending", "pending", "failed"]
    assert broker.client.hlen("fleet:workouts.msgs") == 0

    page = admin_client.get("/admin/failed-plans/").text
    assert "Generate pending (1 plan(s))" in page  # the count before the action
    token = csrf_token(admin_client, "/admin/failed-plans/")
    response = admin_client.post("/admin/failed-plans/generate-pending/", data={"csrf_token": token},
                                 follow_redirects=True)
    assert "Dispatched 1 generation job(s) for plans with pending days." in flashes(response.text)
    assert broker.client.hlen("fleet:workouts.msgs") == 1
    again = admin_client.post("/admin/failed-plans/generate-pending/", data={"csrf_token": token}, follow_redirects=True)
    assert "Dispatched 0 generation job(s) for plans with pending days (1 already queued or running)." in flashes(again.text)


def test_retry_selected_dispatches_one_job_a_plan(admin_client, broker):
    a, b = failed_plan("r1@x.io", days=2), failed_plan("r2@x.io", days=1)
    untouched = failed_plan("r3@x.io")
    response = admin_client.post("/admin/failed-plans/action/", data={
        "action": "retry", "rowid": day_ids(a) + day_ids(b), "csrf_token": csrf_token(admin_client, "/admin/")},
        follow_redirects=True)
    assert "Retrying 3 day(s) of 2 plan(s): dispatched 2 generation job(s)." in flashes(response.text)
    assert statuses(a) == ["pending", "pending"] and statuses(b) == ["pending"] and statuses(untouched) == ["failed"]
    assert broker.client.hlen("fleet:workouts.msgs") == 2


def test_retry_matching_with_nothing_matching_sends_nothing(admin_client, broker):
    failed_plan("n@x.io", code="ERR_AUTH")
    response = admin_client.post("/admin/failed-plans/retry-matching/?flt0_error_code_equals=ERR_API_TIMEOUT",
                                 data={"csrf_token": csrf_token(admin_client, "/admin/")}, follow_redirects=True)
    assert "No failed plans match the filter; nothing to retry." in flashes(response.text)
    assert broker.client.hlen("fleet:panel.msgs") == 0


@pytest.mark.parametrize("query", ["?flt0_plan_equals=abc", "?flt0_failed_utc_after=yesterday",
                                   "?flt0_no_such_filter=1",
                                   "?flt0_error_code_equals=ERR_AUTH&flt1_error_code_equals=ERR_API_TIMEOUT"])
def test_retry_matching_refuses_a_filter_it_cannot_honour(admin_client, broker, query):
    """A bad value would be dropped from the filter, and the retry would reach every failed plan."""
    plan = failed_plan("bad@x.io", code="ERR_AUTH")
    response = admin_client.post("/admin/failed-plans/retry-matching/" + query,
                                 data={"csrf_token": csrf_token(admin_client, "/admin/")}, follow_redirects=True)
    assert "The filter is not valid; nothing was retried." in flashes(response.text)
    assert statuses(plan) == ["failed"] and broker.client.hlen("fleet:panel.msgs") == 0


def test_an_unknown_batch_is_404(admin_client):
    assert admin_client.get("/api/batches/nope").status_code == 404
    assert admin_client.get("/admin/batches/nope/").status_code == 404


# -- error codes -----------------------------------------------------------------------------

def test_error_codes_page_counts_and_links(admin_client, db):
    from core.errors import CODES

    now = utcnow()
    for n, age in enumerate([timedelta(minutes=5), timedelta(hours=3), timedelta(days=2), timedelta(days=9)]):
        joblog(n, status="failed", error_code="ERR_RATE_LIMIT", created_at=now - age)
    failed_plan("ec@x.io", days=2, code="ERR_RATE_LIMIT")
    page = admin_client.get("/admin/error-codes/").text
    for code in CODES.values():
        assert code.code in page and code.sentence.replace("'", "&#39;") in page
    row = re.search(r'<tr id="ERR_RATE_LIMIT">(.*?)</tr>', page, re.S).group(1)
    cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
    assert cells[1:5] == ["yes", "1", "2", "3"] and cells[5].startswith("2")  # 2 workout days failed with it
    assert "/admin/jobs/?flt0_error_code_equals=ERR_RATE_LIMIT" in row
    assert "/admin/failed-plans/?flt0_error_code_equals=ERR_RATE_LIMIT" in row
    assert "Retry all 2 workout days failed with this code" in row
    quiet = re.search(r'<tr id="ERR_AUTH">(.*?)</tr>', page, re.S).group(1)
    assert "failed with this code" not in quiet  # nothing failed with it


# -- dead letters ----------------------------------------------------------------------------

def test_dead_letters_list_requeue_and_delete(admin_client, broker):
    from core.dead_letters import remember_error

    for nonce in ("one", "two", "three"):
        dead_letter(broker, nonce)
    ids = dead_letter_ids(broker)
    remember_error(broker, ids[0], "ERR_INTERNAL", "KeyError: 'x'")
    page = admin_client.get("/admin/dead-letters/").text
    assert "Newest 3 of 3" in page and "ping" in page and '["three"]' in page.replace("&#34;", '"')
    assert "ERR_INTERNAL" in page and "KeyError" in page

    token = csrf_token(admin_client, "/admin/dead-letters/")
    done = admin_client.post("/admin/dead-letters/action/", data={"action": "requeue", "rowid": ids[0],
                                                                  "csrf_token": token}, follow_redirects=True)
    assert "Requeued 1 dead letter(s)." in flashes(done.text)
    assert broker.client.llen("fleet:fleet") == 1 and len(dead_letter_ids(broker)) == 2

    done = admin_client.post("/admin/dead-letters/action/", data={"action": "delete", "rowid": ids[1],
                                                                  "csrf_token": token}, follow_redirects=True)
    assert "Deleted 1 dead letter(s)." in flashes(done.text) and dead_letter_ids(broker) == [ids[2]]

    done = admin_client.post("/admin/dead-letters/requeue-all/", data={"csrf_token": token}, follow_redirects=True)
    assert "Requeued 1 dead letter(s)." in flashes(done.text)
    assert dead_letter_ids(broker) == [] and broker.client.llen("fleet:fleet") == 2


# -- dashboard and health ----------------------------------------------------------------------

def test_dashboard_shows_jobs_queues_breakers_and_leader(admin_client, broker, logs):
    from actors.system import ping

    ping.send("x")
    ping.send("y")
    page = admin_client.get("/admin/").text
    counts = re.search(r'<table class="table table-sm" id="status-counts">(.*?)</table>', page, re.S).group(1)
    cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", counts, re.S)]
    assert dict(zip(cells[::2], cells[1::2])) == {"started": "0", "success": "1", "failed": "1", "retrying": "1",
                                                  "deferred": "0", "abandoned": "0",
                                                  "cancelled": "0"}
    assert page.count('<rect class="ok"') == 24  # an hour a bar
    bars = [tuple(map(int, b)) for b in re.findall(r"UTC: (\d+) succeeded, (\d+) failed</title>", page)]
    assert len(bars) == 24 and sum(ok for ok, _ in bars) == 1 and sum(f for _, f in bars) == 2
    queues = re.search(r'id="queues">(.*?)</table>', page, re.S).group(1)
    assert re.search(r"<td>fleet</td><td class=\"text-right\">2</td>", queues)
    assert "openai" in page and "closed" in page
    assert "no scheduler leader" in page
    broker.client.set("fleet:scheduler:leader", "host-1:4242")
    assert "leader: <code>host-1:4242</code>" in admin_client.get("/admin/").text


def test_dashboard_counts_consumers_only_with_host_pid_queues_and_threads(admin_client, broker, settings):
    """A process that only sends (the panel, each CLI call) is no worker; one that consumes is, with its record."""
    import os
    import socket

    from actors.system import ping
    from core.broker import build_broker
    from tests.helpers import InProcessWorker, wait_for

    sender = build_broker(settings, middleware=[])  # like a CLI call: sends, and so touches Dramatiq's heartbeats
    sender.declare_actor(ping)
    sender.enqueue(ping.message("x"))
    assert '<p id="workers">0 live' in admin_client.get("/admin/").text
    worker = InProcessWorker(broker, worker_threads=3, queues={"fleet", "workouts"}, worker_timeout=100)
    worker.start()
    try:
        page = wait_for(lambda: (p := admin_client.get("/admin/").text) and '<p id="workers">1 live (3 threads' in p and p,
                        timeout=10, message="the worker's presence")
        table = page.split('id="worker-list">', 1)[1].split("</table>", 1)[0]
        cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", table, re.S)]
        assert cells[:4] == [socket.gethostname(), str(os.getpid()), "fleet, workouts", "3"]
        assert cells[4].endswith("s ago")
    finally:
        worker.stop()
        sender.close()
    assert '<p id="workers">0 live' in admin_client.get("/admin/").text  # a stopped worker removes its record


def test_healthz_reports_queues_error_rate_breakers_workers_and_scheduler(admin_client):
    body = admin_client.get("/healthz").json
    assert set(body["checks"]) == {"database", "broker", "queues", "error_rate", "breakers", "workers", "scheduler",
                                   "alerts", "clock", "outbox"}
    assert body["checks"]["clock"]["ok"] is True and body["checks"]["clock"]["skewed"] == []
    assert body["checks"]["breakers"]["states"] == {"openai": "closed", "series_api": "closed"}
    assert body["checks"]["error_rate"]["attempts"] == 0


def test_healthz_is_degraded_not_failing_without_worker_or_scheduler(admin_client, broker):
    response = admin_client.get("/healthz")
    assert response.status_code == 200
    assert response.json["status"] == "degraded" and response.json["degraded"] == ["scheduler", "workers"]
    assert admin_client.get("/healthz?strict=1").status_code == 503


@pytest.fixture
def fleet_running(broker, worker):
    """A live worker (its presence record) and a scheduler leader: nothing degraded."""
    from tests.helpers import wait_for

    broker.client.set("fleet:scheduler:leader", "host-1:4242")
    wait_for(lambda: broker.client.zcard("fleet:workers") == 1, message="the worker's presence")


def test_healthz_is_ok_with_a_worker_and_a_scheduler(admin_client, fleet_running):
    response = admin_client.get("/healthz?strict=1")
    assert response.status_code == 200 and response.json["status"] == "ok", response.json


def test_healthz_is_degraded_on_a_high_error_rate(admin_client, db, fleet_running):
    for n in range(30):
        joblog(n, status="failed" if n % 3 else "success", error_code="ERR_API_TIMEOUT" if n % 3 else None)
    response = admin_client.get("/healthz")
    assert response.status_code == 200 and response.json["degraded"] == ["error_rate"]
    assert response.json["checks"]["error_rate"]["failed"] == 20
    assert admin_client.get("/healthz?strict=1").status_code == 503


def test_healthz_is_degraded_while_a_breaker_is_open(admin_client, fleet_running):
    """An external API down is no reason for a load balancer to drop this panel."""
    from core.breakers import breaker

    breaker("openai").open()
    try:
        response = admin_client.get("/healthz")
        assert response.status_code == 200 and response.json["status"] == "degraded"
        assert response.json["degraded"] == ["breakers"]
        page = admin_client.get("/admin/health/")
        assert page.status_code == 200 and "Degraded: breakers" in page.text and "open: openai" in page.text
    finally:
        breaker("openai").close()


def test_healthz_is_degraded_on_a_queue_backlog(admin_client, broker, monkeypatch):
    from actors.system import ping
    from admin import health

    monkeypatch.setattr(health, "QUEUE_BACKLOG_LIMIT", 2)
    for n in range(3):
        ping.send(str(n))
    response = admin_client.get("/healthz")
    assert response.status_code == 200 and "queues" in response.json["degraded"]
    assert response.json["checks"]["queues"]["queues"]["fleet"]["ready"] == 3
