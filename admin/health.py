"""/healthz: JSON with each check, 200 when all pass, 503 with the failing ones.

A check is `{"ok": True|False|None, ...}`; None means it could not run because a check it
depends on failed already (no queue sizes without a broker), so only that one is failing.
"""
from __future__ import annotations

import dramatiq
from flask import Blueprint, current_app, jsonify

from core.broker import BrokerUnavailable, check_broker
from db.database import database

blueprint = Blueprint("health", __name__)

QUEUE_BACKLOG_LIMIT = 50_000  # ready messages over all queues
ERROR_RATE_LIMIT = 0.5  # failed share of the attempts of the last 15 minutes ...
ERROR_RATE_MIN_ATTEMPTS = 20  # ... once there are enough of them to tell


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def check_database() -> dict:
    try:
        database.execute_sql("SELECT 1").fetchone()
        return {"ok": True}
    except Exception as exc:  # any driver error means the check fails
        return {"ok": False, "error": _error(exc)}


def check_broker_health(settings) -> dict:
    try:
        check_broker(settings, wait=1.0)
        return {"ok": True}
    except BrokerUnavailable as exc:
        return {"ok": False, "error": str(exc)}


def check_queues() -> dict:
    from core.queues import queue_depths

    try:
        depths = queue_depths(dramatiq.get_broker())
    except Exception as exc:
        return {"ok": False, "error": _error(exc)}
    ready = sum(d.ready for d in depths)
    check = {"ok": ready <= QUEUE_BACKLOG_LIMIT, "ready": ready,
             "queues": {d.queue: {"ready": d.ready, "in_flight": d.in_flight, "delayed": d.delayed, "dead": d.dead}
                        for d in depths}}
    if not check["ok"]:
        check["error"] = f"{ready} ready messages (limit {QUEUE_BACKLOG_LIMIT})"
    return check


def check_error_rate() -> dict:
    from admin.stats import error_rate

    try:
        rate = error_rate(15)
    except Exception as exc:
        return {"ok": False, "error": _error(exc)}
    ok = rate["attempts"] < ERROR_RATE_MIN_ATTEMPTS or rate["rate"] <= ERROR_RATE_LIMIT
    check = {"ok": ok, **rate}
    if not ok:
        check["error"] = f"{rate['failed']} of {rate['attempts']} attempts failed in 15 minutes"
    return check


def check_breakers() -> dict:
    from core.breakers import states

    try:
        found = states()
    except Exception as exc:
        return {"ok": False, "error": _error(exc)}
    opened = sorted(s for s, state in found.items() if state == "open")
    check = {"ok": not opened, "states": found}
    if opened:
        check["error"] = "open: " + ", ".join(opened)
    return check


def run_checks(settings) -> dict:
    checks = {"database": check_database(), "broker": check_broker_health(settings)}
    skipped = {"ok": None, "skipped": "broker unreachable"}
    checks["queues"] = check_queues() if checks["broker"]["ok"] else skipped
    checks["error_rate"] = (check_error_rate() if checks["database"]["ok"]
                            else {"ok": None, "skipped": "database unreachable"})
    shares_broker = settings.state_redis_url == settings.broker_url
    checks["breakers"] = check_breakers() if checks["broker"]["ok"] or not shares_broker else skipped
    return checks


def summary(checks: dict) -> dict:
    failing = sorted(name for name, c in checks.items() if c["ok"] is False)
    body = {"status": "failing" if failing else "ok", "checks": checks}
    if failing:
        body["failing"] = failing
    return body


@blueprint.route("/healthz")
def healthz():
    body = summary(run_checks(current_app.config["FLEET_SETTINGS"]))
    return jsonify(body), 503 if body["status"] == "failing" else 200
