"""Bulk actions scoped to the list's filter, with the count on the button; the filter kept after
the action; the confirm step before requeueing or retrying rows of a permanent error code;
dead letters a page at a time."""
from __future__ import annotations

import html
import json
import re
from urllib.parse import urlsplit

from db.models.audit import AuditEvent
from tests.panel import csrf_token, dead_letter_ids, flashes


def dead_letters(broker, n: int) -> list[str]:
    """`n` real dead letters: ping messages sent, fetched and nacked through the Redis broker."""
    from actors.system import ping

    for i in range(n):
        ping.send(f"n{i}")
    consumer = broker.consume("fleet", prefetch=n, timeout=1000)
    for _ in range(n):
        consumer.nack(next(m for m in consumer if m is not None))
    consumer.close()
    return dead_letter_ids(broker)


def button(page: str, form_id: str) -> str:
    form = re.search(rf'<form [^>]*id="{form_id}".*?</form>', page, re.S).group(0)
    return re.sub(r"\s+", " ", re.search(r"<button[^>]*>(.*?)</button>", form, re.S).group(1)).strip()


def test_dead_letter_bulk_actions_act_on_exactly_the_filtered_letters_and_keep_the_filter(admin_client, broker):
    from core.dead_letters import remember_error

    ids = dead_letters(broker, 5)
    for message_id in ids[:3]:
        remember_error(broker, message_id, "ERR_API_TIMEOUT", "slow")
    remember_error(broker, ids[3], "ERR_INTERNAL", "bug")
    page = admin_client.get("/admin/dead-letters/?error_code=ERR_API_TIMEOUT").text
    assert button(page, "requeue-all") == "Requeue 3 matching" and button(page, "delete-all") == "Delete 3 matching"
    assert button(admin_client.get("/admin/dead-letters/").text, "requeue-all") == "Requeue 5 all"

    token = csrf_token(admin_client, "/admin/dead-letters/")
    done = admin_client.post("/admin/dead-letters/requeue-all/?error_code=ERR_API_TIMEOUT", data={"csrf_token": token})
    assert urlsplit(done.headers["Location"]).query == "error_code=ERR_API_TIMEOUT"  # back to the same filter
    assert sorted(dead_letter_ids(broker)) == sorted(ids[3:]) and broker.client.llen("fleet:fleet") == 3
    assert "Requeued 3 dead letter(s)." in flashes(admin_client.get(done.headers["Location"]).text)
    audited = AuditEvent.select().order_by(AuditEvent.id.desc()).get()
    assert (audited.action, audited.target, audited.rows) == ("dead_letters.requeue", "error_code=ERR_API_TIMEOUT", 3)

    done = admin_client.post("/admin/dead-letters/delete-all/?error_code=ERR_INTERNAL", data={"csrf_token": token},
                             follow_redirects=True)
    assert "Deleted 1 dead letter(s)." in flashes(done.text) and dead_letter_ids(broker) == [ids[4]]
    nothing = admin_client.post("/admin/dead-letters/delete-all/?error_code=ERR_AUTH", data={"csrf_token": token},
                                follow_redirects=True)
    assert "No dead letters match the filter; nothing to delete." in flashes(nothing.text)
    assert dead_letter_ids(broker) == [ids[4]]


def test_requeueing_permanent_codes_warns_with_the_count_and_asks_first(admin_client, broker):
    from core.dead_letters import remember_error

    ids = dead_letters(broker, 3)
    for message_id in ids[:2]:
        remember_error(broker, message_id, "ERR_NOT_FOUND", "404")
    remember_error(broker, ids[2], "ERR_API_TIMEOUT", "slow")
    page = admin_client.get("/admin/dead-letters/").text
    assert "will fail again: ERR_NOT_FOUND ×2" in page
    assert "will fail again: ERR_NOT_FOUND ×2" in re.search(r'<form [^>]*id="requeue-all"[^>]*>', page).group(0)

    token = csrf_token(admin_client, "/admin/dead-letters/")
    asked = admin_client.post("/admin/dead-letters/requeue-all/", data={"csrf_token": token})
    assert asked.status_code == 200 and 'id="permanent-warning">will fail again: ERR_NOT_FOUND ×2<' in asked.text
    assert len(dead_letter_ids(broker)) == 3 and broker.client.llen("fleet:fleet") == 0  # nothing done yet
    assert AuditEvent.select().count() == 0  # and nothing in the audit log

    selected = admin_client.post("/admin/dead-letters/action/", data={
        "action": "requeue", "rowid": ids[0], "url": "/admin/dead-letters/?queue=fleet", "csrf_token": token})
    assert "will fail again: ERR_NOT_FOUND ×1" in selected.text and len(dead_letter_ids(broker)) == 3
    form = re.search(r'<form method="post" action="([^"]+)".*?</form>', selected.text, re.S)
    fields = dict(re.findall(r'name="(\w+)" value="([^"]*)"', form.group(0)))
    assert form.group(1) == "/admin/dead-letters/action/" and fields["rowid"] == ids[0] and fields["confirmed"] == "1"
    done = admin_client.post(form.group(1), data=fields)
    assert done.headers["Location"].endswith("/admin/dead-letters/?queue=fleet")
    assert sorted(dead_letter_ids(broker)) == sorted(ids[1:]) and broker.client.llen("fleet:fleet") == 1

    timeout_only = admin_client.post("/admin/dead-letters/requeue-all/?error_code=ERR_API_TIMEOUT",
                                     data={"csrf_token": token})
    assert timeout_only.status_code == 302  # no permanent code among them: no question
    confirmed = admin_client.post("/admin/dead-letters/requeue-all/", data={"csrf_token": token, "confirmed": "1"})
    assert confirmed.status_code == 302 and dead_letter_ids(broker) == []


def test_dead_letters_come_a_page_at_a_time_with_the_filter_kept(admin_client, broker):
    ids = dead_letters(broker, 57)
    first = admin_client.get("/admin/dead-letters/").text
    second = admin_client.get("/admin/dead-letters/?page=2").text
    shown = [re.findall(r'name="rowid" class="action-checkbox" value="([^"]+)"', p) for p in (first, second)]
    assert [len(s) for s in shown] == [50, 7] and sorted(shown[0] + shown[1]) == sorted(ids)
    assert "Newest 50 of 57" in first and "51–57 of 57" in second
    assert 'href="/admin/dead-letters/?page=2"' in first
    filtered = admin_client.get("/admin/dead-letters/?queue=fleet&page=2").text
    assert len(re.findall(r'name="rowid"', filtered)) == 7
    assert 'href="/admin/dead-letters/?page=1&amp;queue=fleet"' in filtered


def test_error_codes_count_every_domain_and_retry_each_after_the_warning(admin_client, broker):
    from actors.batches import create_batch
    from core.dead_letters import remember_error
    from db.models.batches import BatchItem
    from db.models.series import Episode, Series
    from tests.panel import failed_plan

    failed_plan("d@x.io", days=3, code="ERR_NOT_FOUND")
    series = [Series.create(tvdb_id=n, name=f"s{n}", error_code="ERR_NOT_FOUND") for n in (1, 2)]
    Series.create(tvdb_id=3, name="fine")
    Episode.create(tvdb_id=9, series=series[0], season=1, number=1, error_code="ERR_NOT_FOUND")
    batch = create_batch("workouts_retry", "t", ["Plan #1", "Plan #2"], options={"filter": {}})
    BatchItem.update(status="failed", error_code="ERR_NOT_FOUND").where(BatchItem.batch == batch.id).execute()
    ids = dead_letters(broker, 2)
    remember_error(broker, ids[0], "ERR_NOT_FOUND", "404")

    page = admin_client.get("/admin/error-codes/").text
    row = re.search(r'<tr id="ERR_NOT_FOUND">(.*?)</tr>', page, re.S).group(1)
    counts = dict(re.findall(r'data-domain="([^"]+)">\s*(?:<a [^>]*>)?(\d+)', row))
    assert counts == {"workout days": "3", "series": "2", "episodes": "1", "batch items": "2", "dead letters": "1"}
    sync = re.search(r'action="(/admin/series/sync-matching/[^"]+)"\s+data-confirm="([^"]+)"', row)
    assert sync.group(1) == "/admin/series/sync-matching/?flt0_failed_with_equals=ERR_NOT_FOUND"
    assert "They will fail again: ERR_NOT_FOUND ×2." in html.unescape(sync.group(2))
    assert 'href="/admin/dead-letters/?error_code=ERR_NOT_FOUND"' in row

    token = csrf_token(admin_client, "/admin/error-codes/")
    queued = set(broker.client.hkeys("fleet:panel.msgs"))  # the batch's chunk job
    asked = admin_client.post(sync.group(1), data={"csrf_token": token})
    assert asked.status_code == 200 and "will fail again: ERR_NOT_FOUND ×2" in asked.text
    assert set(broker.client.hkeys("fleet:panel.msgs")) == queued  # nothing sent before the confirmation
    done = admin_client.post(sync.group(1), data={"csrf_token": token, "confirmed": "1"}, follow_redirects=True)
    assert any(m.startswith("Sync of 2 matching series started") for m in flashes(done.text))
    sent = [json.loads(broker.client.hget("fleet:panel.msgs", k)) for k in set(broker.client.hkeys("fleet:panel.msgs")) - queued]
    assert [m["args"] for m in sent] == [["series", {"error_code": "ERR_NOT_FOUND"}]]  # exactly the code's rows


def test_retry_this_job_on_a_404_warns_first(admin_client, broker):
    from tests.panel import failed_plan, joblog

    plan = failed_plan("r@x.io", code="ERR_NOT_FOUND")
    row = joblog(1, status="failed", error_code="ERR_NOT_FOUND",
                 args=json.dumps({"args": [plan.user_id, plan.id], "kwargs": {}}))
    page = admin_client.get(f"/admin/jobs/details/?id={row.id}").text
    assert "Retrying will fail again: ERR_NOT_FOUND ×1" in page
    token = csrf_token(admin_client, f"/admin/jobs/details/?id={row.id}")
    asked = admin_client.post("/admin/jobs/retry/", data={"id": row.id, "csrf_token": token})
    assert asked.status_code == 200 and "will fail again: ERR_NOT_FOUND ×1" in asked.text
    assert broker.client.hlen("fleet:workouts.msgs") == 0
    done = admin_client.post("/admin/jobs/retry/", data={"id": row.id, "csrf_token": token, "confirmed": "1"},
                             follow_redirects=True)
    assert any(m.startswith("Sent generate_user_workout_plan again") for m in flashes(done.text))
    assert broker.client.hlen("fleet:workouts.msgs") == 1


def test_retry_all_matching_of_a_permanent_code_asks_with_the_count(admin_client, broker):
    from db.models.batches import Batch
    from tests.panel import failed_plan

    failed_plan("p1@x.io", days=2, code="ERR_NOT_FOUND")
    failed_plan("p2@x.io", days=1, code="ERR_API_TIMEOUT")
    page = admin_client.get("/admin/failed-plans/").text
    assert 'id="permanent-warning"' in page and "will fail again: ERR_NOT_FOUND ×2" in page
    token = csrf_token(admin_client, "/admin/failed-plans/")
    asked = admin_client.post("/admin/failed-plans/retry-matching/", data={"csrf_token": token})
    assert asked.status_code == 200 and "Retry the 3 failed day(s) in 2 plan(s)" in asked.text
    assert Batch.select().count() == 0
    timeouts = admin_client.post("/admin/failed-plans/retry-matching/?flt0_error_code_equals=ERR_API_TIMEOUT",
                                 data={"csrf_token": token})
    assert timeouts.status_code == 302 and timeouts.headers["Location"].startswith("/admin/batches/")
    assert Batch.get().options == {"filter": {"error_code": "ERR_API_TIMEOUT"}}


def test_a_deferred_attempt_shows_no_traceback(admin_client, db):
    from tests.panel import joblog

    row = joblog(1, status="deferred", error_code="ERR_SPEND_CAP", message="over today's budget",
                 traceback="Traceback (most recent call last):\n  JobError: over budget")
    page = admin_client.get(f"/admin/jobs/details/?id={row.id}").text
    assert "Traceback (most recent call last)" not in page and "an expected deferral" in page


def test_a_batch_retry_and_a_sync_of_selected_rows_with_permanent_codes_ask_first(admin_client, broker):
    from actors.batches import create_batch
    from db.models.batches import BatchChunk, BatchItem
    from db.models.series import Series

    batch = create_batch("workouts_retry", "t", ["Plan #1", "Plan #2", "Plan #3"], options={"filter": {}})
    BatchItem.update(status="failed", error_code="ERR_NOT_FOUND").where(BatchItem.batch == batch.id).execute()
    BatchChunk.update(processed=3, failed=3).where(BatchChunk.batch == batch.id).execute()  # the batch's counters
    page = admin_client.get(f"/admin/batches/{batch.id}/").text
    assert ">Retry 3 failed<" in page and "Some will fail again: ERR_NOT_FOUND ×3." in html.unescape(page)
    token = csrf_token(admin_client, f"/admin/batches/{batch.id}/")
    asked = admin_client.post(f"/admin/batches/{batch.id}/retry/", data={"csrf_token": token})
    assert asked.status_code == 200 and "will fail again: ERR_NOT_FOUND ×3" in asked.text
    assert BatchItem.select().where(BatchItem.status == "failed").count() == 3

    gone = Series.create(tvdb_id=404, name="gone", error_code="ERR_NOT_FOUND")
    asked = admin_client.post("/admin/series/action/", data={"action": "sync", "rowid": gone.id, "csrf_token": token})
    assert asked.status_code == 200 and "will fail again: ERR_NOT_FOUND ×1" in asked.text
    assert broker.client.hlen("fleet:data.msgs") == 0
    done = admin_client.post("/admin/series/action/", data={"action": "sync", "rowid": gone.id, "csrf_token": token,
                                                            "confirmed": "1"}, follow_redirects=True)
    assert "Dispatched 1 data job(s)" in " ".join(flashes(done.text)) and broker.client.hlen("fleet:data.msgs") == 1
