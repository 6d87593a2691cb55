"""The Alerts page, the header of every page and the Health page, on the test database and
Redis: firing alerts first, silence and unsilence for admins only and with CSRF, a channel
that keeps failing on Health."""
from __future__ import annotations

import pytest

from actors.alerts.evaluate import Evaluation
from actors.alerts.rules import load_rules
from db.models.alerts import AlertDelivery, AlertSilence
from tests.panel import csrf_token


@pytest.fixture
def deep_queue(tmp_path, monkeypatch, broker, db):
    """A rule that fires: the tests queue holds more ready messages than it allows."""
    from tests.worker_actors import count

    rules = tmp_path / "alerts.toml"
    rules.write_text('[deep]\nkind = "queue_depth"\nmax_ready = 1\nseverity = "warning"\n'
                     '[quiet]\nkind = "queue_depth"\nmax_ready = 1000\n')
    monkeypatch.setenv("FLEET_ALERTS", str(rules))
    for _ in range(2):
        count.send("k")
    Evaluation(load_rules()).run()
    return rules


def test_the_alerts_page_shows_what_fires_in_the_header_of_every_page(admin_client, deep_queue):
    page = admin_client.get("/admin/alerts/").get_data(as_text=True)
    assert 'id="firing"' in page and "deep" in page and "queue tests: 2 messages ready" in page
    assert 'id="history"' in page
    other = admin_client.get("/admin/schedule/").get_data(as_text=True)
    assert 'id="alerts-firing"' in other and "1 alert firing" in other
    health = admin_client.get("/healthz").get_json()
    assert health["status"] == "degraded" and "alerts" in health["degraded"]
    assert health["checks"]["alerts"]["rules"] == ["deep"]


def test_the_page_says_when_no_channel_would_tell_anyone(admin_client, deep_queue, monkeypatch):
    for name in ("FLEET_ALERT_WEBHOOK_URL", "FLEET_SMTP_URL", "FLEET_ALERT_EMAIL_TO"):
        monkeypatch.delenv(name, raising=False)
    page = admin_client.get("/admin/alerts/").get_data(as_text=True)
    assert 'id="no-channel"' in page
    assert '<option selected>deep</option>' in page  # the silence form offers the firing rule first
    monkeypatch.setenv("FLEET_ALERT_WEBHOOK_URL", "http://127.0.0.1:9/hook")
    assert 'id="no-channel"' not in admin_client.get("/admin/alerts/").get_data(as_text=True)


def test_silence_needs_an_admin_and_a_csrf_token(admin_client, viewer_client, deep_queue):
    assert admin_client.post("/admin/alerts/silence/", data={"rule": "deep", "for": "2h"}).status_code == 400
    viewer_client.post("/admin/alerts/silence/", data={"rule": "deep", "for": "2h",
                                                       "csrf_token": csrf_token(viewer_client, "/admin/alerts/")})
    assert AlertSilence.select().count() == 0
    token = csrf_token(admin_client, "/admin/alerts/")
    admin_client.post("/admin/alerts/silence/", data={"rule": "deep", "for": "2h", "reason": "deploy",
                                                      "csrf_token": token})
    silence = AlertSilence.get()
    assert silence.created_by.startswith("admin") or "@" in silence.created_by
    page = admin_client.get("/admin/alerts/").get_data(as_text=True)
    assert "in force" in page and "deploy" in page and "silenced" in page
    bad = admin_client.post("/admin/alerts/silence/", data={"rule": "deep", "for": "forever", "csrf_token": token},
                            follow_redirects=True).get_data(as_text=True)
    assert "deep not silenced" in bad and AlertSilence.select().count() == 1
    admin_client.post("/admin/alerts/silence/", data={"rule": "deep", "action": "unsilence", "csrf_token": token})
    assert AlertSilence.get().lifted_at is not None


def test_a_failing_channel_shows_on_health(admin_client, db, broker):
    AlertDelivery.create(channel="webhook", status="retrying", attempts=3, answer="http://hooks.test/…: HTTP 500")
    health = admin_client.get("/healthz").get_json()
    assert health["checks"]["alerts"]["ok"] is False
    assert "alert channel webhook failing" in health["checks"]["alerts"]["error"]
    page = admin_client.get("/admin/alerts/").get_data(as_text=True)
    assert "The webhook channel is failing" in page


def test_health_says_when_the_evaluation_stopped(admin_client, deep_queue):
    import time

    from actors.alerts.evaluate import EVALUATED_KEY
    from core.state import state_redis

    assert "evaluated 0 s ago" in admin_client.get("/admin/alerts/").get_data(as_text=True)
    state_redis().set(EVALUATED_KEY, time.time() - 600)
    check = admin_client.get("/healthz").get_json()["checks"]["alerts"]
    assert check["ok"] is False and "alerts not evaluated for 10 min" in check["error"]
