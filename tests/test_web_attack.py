"""The panel under attack and outage over real HTTP: a real `fleet web` (waitress) in a
subprocess, on its own redis-server (stopped on purpose) and its own database."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from core.net import free_port
from tests.helpers import create_accounts, fleet, migrated
from tests.panel import PASSWORD, start_web
from tests.servers import RedisServer

ACCOUNTS = {"admin@example.com": "admin", "viewer@example.com": "viewer", "victim@example.com": "admin"}


@pytest.fixture
def panel(fleet_env, processes, tmp_path):
    """(base url, environment, its redis-server) of a `fleet web` behind one trusted proxy."""
    with RedisServer(tmp_path / "redis") as redis_server:
        env = dict(fleet_env, BROKER_URL=redis_server.url, FLEET_TRUSTED_PROXIES="1")
        create_accounts(migrated(env["DATABASE_URL"]), ACCOUNTS, PASSWORD)
        port = free_port()
        web = start_web(processes, env, port, "--threads", "16")
        yield f"http://127.0.0.1:{port}", env, redis_server
        processes.stop(web, timeout=10)


def _token(session: requests.Session, url: str) -> str:
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', session.get(url, timeout=10).text).group(1)


def _logged_in(base: str, email: str = "admin@example.com", address: str = "10.9.0.1") -> requests.Session:
    session = requests.Session()
    session.headers["X-Forwarded-For"] = address
    response = session.post(f"{base}/admin/login", data={"email": email, "password": PASSWORD,
                                                         "csrf_token": _token(session, f"{base}/admin/login")},
                            allow_redirects=False, timeout=10)
    assert response.status_code == 302, response.text[:300]
    return session


def _copy(session: requests.Session) -> requests.Session:
    thief = requests.Session()
    thief.cookies.update(session.cookies)
    return thief


def _opens_panel(session: requests.Session, base: str) -> bool:
    return session.get(f"{base}/admin/", allow_redirects=False, timeout=10).status_code == 200


def test_the_attack_script_finds_nothing(panel):
    base, _, _ = panel
    script = Path(__file__).with_name("attack_panel.py")
    result = subprocess.run([sys.executable, str(script), base, "--admin", "admin@example.com",
                             "--viewer", "viewer@example.com", "--victim", "victim@example.com",
                             "--password", PASSWORD], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every case held" in result.stdout


def test_a_cookie_copied_before_logout_opens_nothing_after_it(panel):
    base, _, _ = panel
    session = _logged_in(base)
    stolen, other_browser = _copy(session), _logged_in(base, address="10.9.0.2")
    assert _opens_panel(stolen, base)
    response = session.post(f"{base}/admin/logout", data={"csrf_token": _token(session, f"{base}/admin/")},
                            allow_redirects=False, timeout=10)
    assert response.status_code == 302
    assert not _opens_panel(stolen, base) and not _opens_panel(other_browser, base)  # every session of the account
    assert _opens_panel(_logged_in(base), base)  # a new login works


@pytest.mark.parametrize("command", [["accounts", "set-password", "viewer@example.com", "--password-stdin"],
                                     ["accounts", "disable", "viewer@example.com"]])
def test_a_new_password_or_disabling_ends_every_session(panel, command):
    base, env, _ = panel
    sessions = [_logged_in(base, "viewer@example.com", f"10.9.1.{i}") for i in (1, 2)]
    admin = _logged_in(base)
    result = fleet(*command, env=env, input="another-long-password\n")
    assert result.returncode == 0, result.stderr
    assert not any(_opens_panel(s, base) for s in sessions)
    assert _opens_panel(admin, base)  # other accounts keep their sessions
    old = requests.post(f"{base}/admin/login", data={"email": "viewer@example.com", "password": PASSWORD,
                                                     "csrf_token": _token(s := requests.Session(), f"{base}/admin/login")},
                        cookies=s.cookies, allow_redirects=False, timeout=10)
    assert old.status_code == 401


def test_redis_down_gives_readable_answers_and_the_database_pages_keep_working(panel):
    base, _, redis_server = panel
    session = _logged_in(base)
    redis_server.kill()
    fresh = _logged_in(base, address="10.9.2.1")  # login needs only the database (the throttle counts in-process)
    for path in ["/admin/", "/admin/jobs/", "/admin/failed-plans/", "/admin/error-codes/", "/admin/health/"]:
        for client in (session, fresh):
            response = client.get(base + path, timeout=20)
            assert response.status_code in (200, 503) and "Traceback" not in response.text, path
    assert session.get(base + "/admin/jobs/", timeout=20).status_code == 200
    dead = session.get(base + "/admin/dead-letters/", timeout=20)
    assert dead.status_code in (200, 503) and "Redis" in dead.text and "Traceback" not in dead.text
    metrics = requests.get(base + "/metrics", timeout=20)
    assert metrics.status_code == 200 and 'fleet_scrape_error{part="queues"} 1.0' in metrics.text
    health = requests.get(base + "/healthz", timeout=20)
    assert health.status_code == 503 and health.json() == {"status": "down"}
    health = session.get(base + "/healthz", timeout=20)  # the details for a logged-in operator
    assert health.status_code == 503 and health.json()["failing"] == ["broker"]


def test_database_down_healthz_is_json_503_and_login_a_readable_page(fleet_env, processes):
    """The database unreachable (nothing listens on its port): JSON naming it, never an HTML 500."""
    env = dict(fleet_env, DATABASE_URL=f"postgresql://fleet:secret@127.0.0.1:{free_port()}/fleet")
    port = free_port()
    web = start_web(processes, env, port, "--threads", "16")
    try:
        base = f"http://127.0.0.1:{port}"
        health = requests.get(base + "/healthz", timeout=30)
        assert health.status_code == 503 and health.headers["Content-Type"].startswith("application/json")
        assert health.json() == {"status": "down"}  # not the database's host, port and role
        session = requests.Session()
        response = session.post(f"{base}/admin/login", data={"email": "a@b.io", "password": PASSWORD,
                                                              "csrf_token": _token(session, f"{base}/admin/login")},
                                timeout=30)
        assert response.status_code == 503 and "the database does not answer" in response.text
        assert "Traceback" not in response.text and "secret" not in response.text
    finally:
        processes.stop(web, timeout=10)
