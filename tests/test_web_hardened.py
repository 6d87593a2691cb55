"""The panel's defences over real HTTP: a real `fleet web` (waitress) in a subprocess, on its
own database and var/, reached through real sockets."""
from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest

from core.net import free_port
from tests.helpers import create_accounts, migrated, wait_for
from tests.panel import PASSWORD, start_web

ACCOUNTS = {"admin@example.com": "admin", "viewer@example.com": "viewer", "other@example.com": "viewer"}


@pytest.fixture
def web(fleet_env, processes, tmp_path):
    """(base url, the web process, its temporary directory) of a migrated `fleet web` with an
    admin and a viewer."""
    tmp = tmp_path / "web-tmp"
    tmp.mkdir()
    env = dict(fleet_env, TMPDIR=str(tmp))
    create_accounts(migrated(env["DATABASE_URL"]), ACCOUNTS, PASSWORD)
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
    from admin.app import create_app, trust_proxies

    app = create_app(settings)  # the session's settings: other settings would boot a second broker
    if proxies:
        trust_proxies(app, proxies)
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


# -- CSV exports ---------------------------------------------------------------------------------

def _fill_job_log(database_url: str, rows: int, message_chars: int) -> None:
    from db.database import open_database
    from db.models import utcnow
    from db.models.jobs import JobLog

    db = open_database(database_url)
    now = utcnow()
    with JobLog.bind_ctx(db), db.atomic():
        for start in range(0, rows, 500):
            JobLog.insert_many([{"run_id": f"run-{n}", "job_class": "generate_user_workout_plan",
                                 "message_id": f"msg-{n}", "queue": "workouts", "status": "failed",
                                 "error_code": "ERR_INTERNAL", "message": f"{n} " + "x" * message_chars,
                                 "created_at": now} for n in range(start, min(rows, start + 500))]).execute()
    db.close()


def _session_cookie(base: str, email: str) -> str:
    import requests

    session = requests.Session()
    page = session.get(f"{base}/admin/login", timeout=10).text
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    response = session.post(f"{base}/admin/login", data={"email": email, "password": PASSWORD, "csrf_token": token},
                            allow_redirects=False, timeout=10)
    assert response.status_code == 302
    return "session=" + session.cookies["session"]


def _slow_export(port: int, cookie: str) -> tuple[socket.socket, int]:
    """A CSV export whose reader takes the status line and then reads nothing more (a small
    receive buffer, so the server's writes back up soon): the socket and the HTTP status."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET /admin/jobs/export/csv/ HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n\r\n".encode())
    head = b""
    while b"\r\n" not in head:
        head += sock.recv(64)
    return sock, int(head.split()[1])


def test_slow_exports_leave_the_web_process_answering(web, fleet_env):
    """A viewer opens 8 exports of a 60 MB job log and reads none of them: 2 run (and hold
    their threads, their output backed up), 6 are refused with 429 at once. Another account
    gets its 2; a third none (half of the 8 threads export at most). /healthz and the panel
    still answer. Without the limits the 8 exports held all 8 threads and /healthz waited."""
    import requests

    base, _, _ = web
    port = int(base.rsplit(":", 1)[1])
    _fill_job_log(fleet_env["DATABASE_URL"], rows=30_000, message_chars=2000)
    viewer, admin, other = (_session_cookie(base, e) for e in ("viewer@example.com", "admin@example.com",
                                                                 "other@example.com"))
    exports = [_slow_export(port, viewer) for _ in range(8)]
    try:
        statuses = sorted(status for _, status in exports)
        assert statuses == [200, 200] + [429] * 6, statuses
        health = requests.get(f"{base}/healthz", timeout=10)  # waits its turn for a thread, if none is free
        assert health.json()["status"] in ("ok", "degraded")
        exports += [_slow_export(port, admin) for _ in range(2)]
        assert [status for _, status in exports[-2:]] == [200, 200]
        exports.append(_slow_export(port, other))
        assert exports[-1][1] == 429  # 4 exports run: half the threads
        assert requests.get(f"{base}/healthz", timeout=10).status_code == 200
        assert requests.get(f"{base}/admin/", headers={"Cookie": other}, timeout=10).status_code == 200
        for sock, status in exports:
            if status == 200:  # still streaming: nothing has ended it
                sock.setblocking(False)
                assert sock.recv(1024)
    finally:
        for sock, _ in exports:
            sock.close()

    def another_export() -> bool:  # the slots come back once the server sees the readers gone
        sock, status = _slow_export(port, viewer)
        sock.close()
        return status == 200

    wait_for(another_export, timeout=30, interval=0.5, message="an export slot given back")


@pytest.mark.parametrize("separator", [",", ";", "\t"])
def test_csv_cells_cannot_become_formulas_in_any_locale(admin_client, separator):
    """Read as a spreadsheet of a `,`, `;` or tab separated locale would: no cell starts a formula."""
    import csv
    import io

    from tests.panel import joblog

    hostile = ["=HYPERLINK(\"http://evil\")", "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1", "  =1+1",
               "ok;=1+1", "ok,=1+1", "ok\t=1+1", "plain text"]
    for n, message in enumerate(hostile):
        joblog(n, status="failed", error_code="ERR_INTERNAL", message=message)
    text = admin_client.get("/admin/jobs/export/csv/").text
    first = text.splitlines()[0]
    assert first.startswith('"Time (UTC)","') and first.endswith('"')  # every cell quoted, the titles too
    # a quote opens a quoted cell only at its start, as in spreadsheets: after `"…",` a `;` reader
    # is outside quotes and splits at the next `;`
    table = list(csv.reader(io.StringIO(text, newline=""), delimiter=separator))
    cells = [cell for row in table[1:] for cell in row]
    assert not [c for c in cells if c.lstrip(' "')[:1] in ("=", "+", "-", "@", "\t", "\r")], cells
    messages = {row["Message"] for row in csv.DictReader(io.StringIO(text, newline=""))}
    assert messages >= {"'=HYPERLINK(\"http://evil\")", "'@SUM(A1)", "'  =1+1", "ok;'=1+1", "ok,'=1+1", "plain text"}
