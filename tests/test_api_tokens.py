"""API tokens: Bearer on /api, /metrics, /healthz and the CSV export, read vs operate, revoked and
expired refused, last use noted, no CSRF for a token but still for a session; the JSON API."""
from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

import actors.workouts  # noqa: F401  (generate_user_workout_plan declared: a retry sends it)
from actors import tokens
from db.models import utcnow
from db.models.audit import AuditEvent
from db.models.tokens import ApiToken
from tests.panel import dead_letter, dead_letter_ids, failed_plan, joblog


def bearer(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def read_token(db):
    return tokens.create_token("grafana", "read", "test")[1]


@pytest.fixture
def operate_token(db):
    return tokens.create_token("ops-script", "operate", "test")[1]


def test_a_read_token_lists_jobs_with_filters_and_notes_its_last_use(app, read_token):
    joblog(1, status="failed", error_code="ERR_AUTH")
    joblog(2, status="success")
    joblog(3, status="failed", error_code="ERR_API_TIMEOUT")
    client = app.test_client()
    assert ApiToken.get().last_used_at is None
    failed = client.get("/api/jobs?status=failed&limit=1", headers=bearer(read_token))
    assert failed.status_code == 200, failed.text
    assert [j["message_id"] for j in failed.json["jobs"]] == ["msg-3"]
    more = client.get(f"/api/jobs?status=failed&before={failed.json['next_before']}", headers=bearer(read_token))
    assert [j["message_id"] for j in more.json["jobs"]] == ["msg-1"] and more.json["next_before"] is None
    used = ApiToken.get()
    assert used.last_used_at is not None and used.last_used_from == "127.0.0.1"
    assert client.get("/api/jobs?limit=0", headers=bearer(read_token)).json == {"error": "limit must be between 1 and 500"}
    assert client.get("/api/jobs?since=yesterday", headers=bearer(read_token)).status_code == 400


def test_a_read_token_cannot_retry_or_requeue(app, read_token, broker):
    joblog(1, status="failed")
    client = app.test_client()
    for path in ("/api/jobs/retry", "/api/dead-letters/requeue", "/api/batches/x/cancel"):
        refused = client.post(path, json={"actor": "generate_user_workout_plan", "all": True}, headers=bearer(read_token))
        assert refused.status_code == 403 and "operate" in refused.json["error"], path
    assert AuditEvent.select().count() == 0


def test_an_operate_token_retries_by_filter_without_csrf_and_is_audited(app, operate_token, broker):
    plan = failed_plan("api@x.io")
    joblog(1, status="failed", args=f'{{"args": [{plan.user_id}, {plan.id}], "kwargs": {{}}}}')
    joblog(2, status="failed", job_class="other_actor", args='{"args": [], "kwargs": {}}')
    client = app.test_client()
    unfiltered = client.post("/api/jobs/retry", json={}, headers=bearer(operate_token))
    assert unfiltered.status_code == 400 and "at least one filter" in unfiltered.json["error"]
    done = client.post("/api/jobs/retry", json={"actor": "generate_user_workout_plan"}, headers=bearer(operate_token))
    assert done.status_code == 200, done.text
    assert done.json["matched"] == 1 and done.json["retried"] == 1
    assert broker.client.hlen("fleet:workouts.msgs") == 1
    event = AuditEvent.get()
    assert (event.action, event.who, event.role, event.source, event.rows, event.address) == (
        "jobs.retry", "token:ops-script", "operate", "api", 1, "127.0.0.1")
    assert "actor=generate_user_workout_plan" in event.target and "status=failed" in event.target
    assert event.trace_id


def test_an_operate_token_requeues_dead_letters(app, operate_token, broker):
    dead_letter(broker, "dl")
    message_id = dead_letter_ids(broker)[0]
    client = app.test_client()
    listed = client.get("/api/dead-letters", headers=bearer(operate_token)).json
    assert listed["total"] == 1 and listed["dead_letters"][0]["message_id"] == message_id
    assert client.post("/api/dead-letters/requeue", json={}, headers=bearer(operate_token)).status_code == 400
    done = client.post("/api/dead-letters/requeue", json={"message_ids": [message_id]}, headers=bearer(operate_token))
    assert done.json["requeued"] == 1 and dead_letter_ids(broker) == []
    assert AuditEvent.get().action == "dead_letters.requeue"


def test_revoked_expired_unknown_and_misplaced_tokens_are_refused(app, read_token, operate_token):
    client = app.test_client()
    tokens.revoke_token("grafana")
    ApiToken.update(expires_at=utcnow() - timedelta(seconds=1)).where(ApiToken.name == "ops-script").execute()
    for secret in (read_token, operate_token, "fleet_" + "x" * 43, "not-a-token"):
        refused = client.get("/api/jobs", headers=bearer(secret))
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer"), secret
    fresh = tokens.create_token("fresh", "operate", "test")[1]
    page = client.get("/admin/jobs/", headers=bearer(fresh))
    assert page.status_code == 401 and "CSV exports only" in page.json["error"]
    listed = tokens.list_tokens()  # revoked ones last
    assert [(t.name, tokens.state(t)) for t in listed] == [("fresh", "active"), ("ops-script", "expired"),
                                                           ("grafana", "revoked")]


def test_a_session_keeps_its_csrf_check_on_the_api(admin_client, broker):
    joblog(1, status="failed")
    refused = admin_client.post("/api/jobs/retry", json={"actor": "generate_user_workout_plan"})
    assert refused.status_code == 400 and "CSRF" in refused.text


def test_the_csv_export_and_healthz_take_a_token(app, read_token):
    joblog(1, status="failed", error_code="ERR_AUTH")
    client = app.test_client()
    export = client.get("/admin/jobs/export/csv/", headers=bearer(read_token))
    assert export.status_code == 200 and export.mimetype == "text/csv" and "msg-1" in export.text
    assert "checks" in client.get("/healthz", headers=bearer(read_token)).json
    assert "checks" not in client.get("/healthz").json


def test_metrics_can_require_a_token(app, settings, read_token):
    client = app.test_client()
    assert client.get("/metrics").status_code == 200  # off by default
    app.config["FLEET_SETTINGS"] = dataclasses.replace(settings, metrics_token_required=True)
    assert client.get("/metrics").status_code == 401
    scraped = client.get("/metrics", headers=bearer(read_token))
    assert scraped.status_code == 200 and "fleet_queue_messages" in scraped.text
