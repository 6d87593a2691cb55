import re

import pytest

from core.net import free_port
from core.settings import load_settings


@pytest.fixture
def app(db, broker, settings):
    from admin.app import create_app

    app = create_app(settings)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def account(db):
    from actors.accounts import create_account

    return create_account("op@example.com", "a-long-password", "admin")


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)


def test_healthz_is_public_and_200_when_healthy(client, account):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "degraded"}  # no worker, no scheduler; nothing more without a login
    page = client.get("/admin/login")
    client.post("/admin/login", data={"email": "op@example.com", "password": "a-long-password",
                                      "csrf_token": _csrf(page.text)})
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json["status"] == "degraded" and "failing" not in response.json
    assert response.json["checks"]["database"]["ok"] and response.json["checks"]["broker"]["ok"]


def test_healthz_is_503_with_the_failing_check(db, tmp_path):
    from admin import health

    down = load_settings({"FLEET_VAR_DIR": str(tmp_path), "BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"})
    checks = health.run_checks(down)
    assert checks["database"]["ok"] and not checks["broker"]["ok"]
    assert "broker unreachable" in checks["broker"]["error"]


def test_healthz_returns_503_over_http(db, tmp_path):
    from flask import Flask

    from admin import health

    app = Flask(__name__)
    app.config["FLEET_SETTINGS"] = load_settings(
        {"FLEET_VAR_DIR": str(tmp_path), "BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"})
    app.register_blueprint(health.blueprint)
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.json == {"status": "down"}


def test_panel_needs_login(client):
    response = client.get("/admin/")
    assert response.status_code == 302
    assert "/admin/login" in response.headers["Location"]


def test_login_with_csrf_then_logout(client, account):
    page = client.get("/admin/login")
    assert page.status_code == 200 and b"Log in" in page.data
    response = client.post("/admin/login?next=/admin/", data={
        "email": "op@example.com", "password": "a-long-password", "csrf_token": _csrf(page.text)})
    assert response.status_code == 302 and response.headers["Location"] == "/admin/"
    dashboard = client.get("/admin/")
    assert dashboard.status_code == 200 and b"op@example.com" in dashboard.data
    cookie = response.headers.get("Set-Cookie", "")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    logout = client.post("/admin/logout", data={"csrf_token": _csrf(dashboard.text)})
    assert logout.status_code == 302
    assert client.get("/admin/").status_code == 302


def test_wrong_password_is_refused(client, account):
    page = client.get("/admin/login")
    response = client.post("/admin/login", data={
        "email": "op@example.com", "password": "nope-nope", "csrf_token": _csrf(page.text)})
    assert response.status_code == 401 and b"Wrong email or password." in response.data
    assert client.get("/admin/").status_code == 302


def test_login_without_csrf_token_is_refused(client, account):
    response = client.post("/admin/login", data={"email": "op@example.com", "password": "a-long-password"})
    assert response.status_code == 400
    assert client.get("/admin/").status_code == 302


def test_open_redirect_after_login_is_ignored(client, account):
    page = client.get("/admin/login")
    response = client.post("/admin/login?next=//evil.example/", data={
        "email": "op@example.com", "password": "a-long-password", "csrf_token": _csrf(page.text)})
    assert response.headers["Location"] == "/admin/"


def _samples(body: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {f"{s.name}{sorted(s.labels.items())}": s.value
            for family in text_string_to_metric_families(body) for s in family.samples}


def test_metrics_are_public_and_count_queues_jobs_and_breakers(client, worker, broker):
    """Counters kept by the worker (they only grow over the session: compared before and after)."""
    import socket

    import pybreaker

    from core import dead_letters
    from core.breakers import breaker
    from core.errors import JobError
    from tests import worker_actors as wa
    from tests.helpers import wait_for

    host = socket.gethostname()  # this machine's counters say whose they are
    success = f"fleet_jobs_total[('actor', 'count'), ('host', '{host}'), ('queue', 'tests'), ('status', 'success')]"
    failed = f"fleet_jobs_total[('actor', 'flaky'), ('host', '{host}'), ('queue', 'tests'), ('status', 'failed')]"
    durations = f"fleet_job_duration_seconds_count[('actor', 'count'), ('host', '{host}'), ('status', 'success')]"
    before = _samples(client.get("/metrics").text)
    wa.count.send("metrics")
    wa.flaky.send("metrics-dead", 5, "ERR_AUTH")
    wait_for(lambda: dead_letters.count_dead_letters(broker) == 1, message="a dead letter")
    broker.join("tests", timeout=10_000)

    def down():
        raise JobError("ERR_API_UNAVAILABLE", "HTTP 503")

    for _ in range(3):
        with pytest.raises((JobError, pybreaker.CircuitBreakerError)):
            breaker("openai").call(down)

    client.application.extensions["fleet_cache"].clear()  # the gauges are cached 5 s; the counters never are
    after = _samples(client.get("/metrics").text)
    for name in (success, failed, durations):
        assert after[name] - before.get(name, 0.0) == 1.0, name
    assert after["fleet_queue_messages[('queue', 'tests'), ('state', 'dead')]"] == 1.0
    assert after["fleet_breaker_open[('service', 'openai')]"] == 1.0
    assert after["fleet_breaker_open[('service', 'series_api')]"] == 0.0
