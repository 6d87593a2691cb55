"""The panel's defences over real HTTP: a real `fleet web` (waitress) in a subprocess, on its
own database and var/, reached through real sockets."""
from __future__ import annotations

import dataclasses
import os
import re
import socket
from pathlib import Path

import pytest

from core.net import free_port
from tests.helpers import fleet
from tests.panel import PASSWORD, start_web

ACCOUNTS = {"admin@example.com": "admin", "viewer@example.com": "viewer"}


@pytest.fixture
def web(fleet_env, processes, tmp_path):
    """(base url, the web process, its temporary directory) of a migrated `fleet web` with an
    admin and a viewer."""
    tmp = tmp_path / "web-tmp"
    tmp.mkdir()
    env = dict(fleet_env, TMPDIR=str(tmp))
    assert fleet("db", "migrate", env=env).returncode == 0
    for email, role in ACCOUNTS.items():
        created = fleet("accounts", "create", email, "--role", role, "--password-stdin", env=env, input=PASSWORD + "\n")
        assert created.returncode == 0, created.stderr
    port = free_port()
    process = start_web(processes, env, port)
    yield f"http://127.0.0.1:{port}", process, tmp
    processes.stop(process, timeout=10)


def _temp_bytes(pid: int, directory: Path) -> int:
    """Bytes in the files of `directory` the process holds open (waitress's spooled bodies are
    unlinked temporary files: only their descriptors find them)."""
    total = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith(str(directory)):
                total += os.stat(f"/proc/{pid}/fd/{fd}").st_size
        except OSError:
            pass  # closed meanwhile
    return total


def test_a_huge_body_is_refused_from_its_length_without_being_spooled(web):
    """An anonymous 800 MB login form: 413 from the Content-Length alone, and not one body
    byte in a temporary file (waitress's default limit, 1 GB, spooled it all to disk first)."""
    base, process, tmp = web
    port = int(base.rsplit(":", 1)[1])
    size = 800 * 2**20
    chunk = b"x" * 2**20
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /admin/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n"
                     b"Content-Length: %d\r\n\r\n" % size)
        sent = 0
        try:
            for _ in range(8):  # 8 MB of the body: a server reading it spools it past 512 kB
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the server answered and closed: what it should do
        spooled = _temp_bytes(process.pid, tmp)
        assert spooled < 2**20, f"{spooled} bytes of the body were written to {tmp}"
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(4096)
            if not data:
                break
            answer += data
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sorted(p.name for p in tmp.iterdir()) == []


# -- security headers ---------------------------------------------------------------------------

def test_every_response_carries_the_security_headers(app, admin_client):
    anonymous = app.test_client()
    for response in (anonymous.get("/admin/login"), anonymous.get("/healthz"), anonymous.get("/admin/"),
                     admin_client.get("/admin/jobs/"), admin_client.get("/admin/no-such-page"),
                     anonymous.get("/admin/static/fleet.css")):
        csp = response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "same-origin"
        assert "Strict-Transport-Security" not in response.headers  # plain HTTP


def test_the_pages_have_no_inline_script_or_style(admin_client):
    for path in ("/admin/", "/admin/jobs/", "/admin/failed-plans/", "/admin/schedule/", "/admin/dead-letters/",
                 "/admin/batches/", "/admin/health/", "/admin/alerts/"):
        page = admin_client.get(path).text
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page), path
        assert not re.search(r"\son(click|submit|change|load)=\"(?!return false;\")", page), path
        assert " style=" not in page, path


def _https_app(settings, proxies: int):
    from admin.app import create_app

    app = create_app(dataclasses.replace(settings, trusted_proxies=proxies))
    app.config["TESTING"] = True
    return app


def test_behind_a_tls_proxy_the_cookie_is_secure_and_hsts_is_sent(db, broker, settings):
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "10.1.2.3"}
    page = _https_app(settings, proxies=1).test_client().get("/admin/login", headers=forwarded)
    assert "session=" in page.headers["Set-Cookie"] and "; Secure" in page.headers["Set-Cookie"]
    assert page.headers["Strict-Transport-Security"].startswith("max-age=")
    # the same header from a client when no proxy is trusted: plain HTTP, no Secure (the browser would drop it)
    page = _https_app(settings, proxies=0).test_client().get("/admin/login", headers=forwarded)
    assert "session=" in page.headers["Set-Cookie"] and "Secure" not in page.headers["Set-Cookie"]
    assert "Strict-Transport-Security" not in page.headers


# -- /healthz -----------------------------------------------------------------------------------

def test_healthz_tells_a_stranger_the_status_and_an_operator_the_details(web):
    import requests

    base, _, _ = web
    anonymous = requests.get(f"{base}/healthz", timeout=10)
    assert anonymous.status_code == 200 and anonymous.json() == {"status": "degraded"}  # no worker, no scheduler
    operator = requests.Session()
    page = operator.get(f"{base}/admin/login", timeout=10).text
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    operator.post(f"{base}/admin/login", data={"email": "viewer@example.com", "password": PASSWORD,
                                               "csrf_token": token}, timeout=10)
    details = operator.get(f"{base}/healthz", timeout=10).json()
    assert details["status"] == "degraded" and details["checks"]["database"]["ok"]
    assert set(details["degraded"]) >= {"workers", "scheduler"}


def test_the_checks_errors_are_redacted(db, tmp_path):
    from admin import health
    from core.settings import load_settings

    down = load_settings({"FLEET_VAR_DIR": str(tmp_path),
                          "BROKER_URL": f"redis://fleet:hunter2-broker@127.0.0.1:{free_port()}/0"})
    checks = health.run_checks(down)
    assert checks["broker"]["ok"] is False and "hunter2-broker" not in str(checks)
