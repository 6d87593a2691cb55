"""Driving the operator panel through Flask's test client (and a browser through its login form), and the rows its pages show.

The `app`, `admin_client` and `viewer_client` fixtures are in tests/conftest.py.
"""
from __future__ import annotations

import html
import json
import re

import dramatiq

from actors.middleware.joblog import named_arguments
from db.models import utcnow
from db.models.jobs import JobArgument, JobLog
from db.models.workouts import Plan, User, WorkoutPlan

PASSWORD = "a-long-password"
SCRIPT = '<script>alert("pwned")</script>'


def csrf_token(client, path: str = "/admin/login") -> str:
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', client.get(path).text).group(1)


def log_in(client, email: str, password: str = PASSWORD, **kwargs):
    return client.post("/admin/login", data={"email": email, "password": password,
                                              "csrf_token": csrf_token(client)}, **kwargs)


def browser_log_in(page, email: str, password: str = PASSWORD, lands: str = r".*/admin/$"):
    """Log a Playwright page in through the login form and wait for the page it lands on."""
    page.goto("/admin/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(lands))
    return page


def operator(app, role: str):
    """A test client logged in as a new operator with this role."""
    from actors.accounts import create_account

    create_account(f"{role}@example.com", PASSWORD, role)
    client = app.test_client()
    assert log_in(client, f"{role}@example.com").status_code == 302
    return client


def joblog(n: int = 1, **fields) -> JobLog:
    """A JobLog row as the JobLog writer leaves it: with its arguments indexed by name."""
    row = {"run_id": f"run-{n}", "job_class": "generate_user_workout_plan", "message_id": f"msg-{n}",
           "queue": "workouts", "status": "success", "created_at": utcnow(), **fields}
    created = JobLog.create(**row)
    try:
        call = json.loads(row.get("args") or "")
    except ValueError:
        call = None  # a test's text that is not a call: nothing to index
    if isinstance(call, dict) and isinstance(call.get("args"), list):
        message = dramatiq.Message(queue_name=row["queue"], actor_name=row["job_class"], args=tuple(call["args"]),
                                   kwargs=call.get("kwargs") or {}, options={}, message_id=row["message_id"])
        pairs = named_arguments(dramatiq.get_broker(), message)
        if pairs:
            JobArgument.insert_many([{"message_id": row["message_id"], "name": name, "value": value,
                                      "created_at": row["created_at"]} for name, value in pairs]).execute()
    return created


def failed_plan(email: str, days: int = 1, code: str = "ERR_API_TIMEOUT", message: str = "OpenAI did not answer") -> Plan:
    user, _ = User.get_or_create(email=email)
    plan = Plan.create(user=user, goal="strength", days=days)
    for day in range(1, days + 1):
        WorkoutPlan.create(plan=plan, day=day, status="failed", error_code=code, error_message=message)
    return plan


def day_ids(plan) -> list[int]:
    return [w.id for w in WorkoutPlan.select().where(WorkoutPlan.plan == plan).order_by(WorkoutPlan.day)]


def statuses(plan) -> list[str]:
    return [w.status for w in WorkoutPlan.select().where(WorkoutPlan.plan == plan).order_by(WorkoutPlan.day)]


def rows(page: str) -> int:
    """The rows of a list page."""
    return len(re.findall(r'<tr>\s*(?:<td>\s*<input type="checkbox" name="rowid"|<td class="list-buttons-column">)', page))


def flashes(page: str) -> list[str]:
    return [re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", "", m))).replace("×", "").strip()
            for m in re.findall(r'<div class="alert alert-[a-z]+ alert-dismissable">(.*?)</div>', page, re.S)]


def dead_letter(broker, nonce: str) -> None:
    """A real dead letter: a message sent, fetched and nacked through Dramatiq's Redis broker."""
    from actors.system import ping

    ping.send(nonce)
    consumer = broker.consume("fleet", prefetch=1, timeout=1000)
    message = next(m for m in consumer if m is not None)
    consumer.nack(message)
    consumer.close()


def dead_letter_ids(broker) -> list[str]:
    """The message ids of the broker's dead letters."""
    from core.dead_letters import list_dead_letters

    return [d.message_id for d in list_dead_letters(broker)]


def start_web(processes, env: dict, port: int, *args: str):
    """A real `fleet web` (waitress) on this port, answering; its log in the test's directory
    (a pipe nobody reads fills up, and then every request that logs blocks)."""
    import requests

    from tests.helpers import wait_for

    web = processes.start("web", "--port", str(port), *args, env=env, name="web")
    log = processes.logs / f"web-{len(processes.started) - 1}.log"

    def up():
        if web.poll() is not None:
            raise AssertionError(log.read_text())
        try:
            return requests.get(f"http://127.0.0.1:{port}/admin/login", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    wait_for(up, timeout=30, message="fleet web")
    return web
