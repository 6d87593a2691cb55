"""/healthz: JSON with each check. It answers for *this process*: 503 only when it cannot
work (the database or the broker does not answer; `"status": "down"`), so a load balancer drops
a panel that is really broken and keeps one that merely reports trouble elsewhere. Trouble
elsewhere (a high error rate, an open breaker, a backlog, no live worker, no scheduler leader,
a process whose clock is over a second off the fleet's, jobs committed but left unsent)
is `"status": "degraded"` with 200, or 503 with `?strict=1` for monitors that want it.

Without a login the body is the status alone: the checks name hosts, processes and the
database's connection errors. A logged-in operator gets them, every error redacted.

A check is `{"ok": True|False|None, ...}`; None means it could not run because a check it
depends on failed already (no queue sizes without a broker). What is read often is cached
for a few seconds (admin.cache), and nothing here scans Redis or counts the JobLog.
"""
from __future__ import annotations

import dramatiq
from flask import Blueprint, current_app, jsonify, request
from flask_login import current_user

from actors.middleware.presence import live_workers
from actors.schedule import LEADER_KEY
from admin.cache import cached
from core import clock
from core.broker import BrokerUnavailable, check_broker
from core.redact import redact
from core.state import state_redis
from db.database import database

blueprint = Blueprint("health", __name__)

CRITICAL = ("database", "broker")  # without these this process cannot work: 503
QUEUE_BACKLOG_LIMIT = 50_000  # ready messages over all queues
ERROR_RATE_LIMIT = 0.5  # failed share of the attempts of the last 15 minutes ...
ERROR_RATE_MIN_ATTEMPTS = 20  # ... once there are enough of them to tell
CACHE_SECONDS = 5


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
    if any(d.in_flight is None for d in depths):
        from core.queues import NO_MANAGEMENT

        check["in_flight"] = NO_MANAGEMENT
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
    from core.breakers import held_back, states

    try:
        found = states()
        hosts = held_back()
    except Exception as exc:
        return {"ok": False, "error": _error(exc)}
    opened = sorted(s for s, state in found.items() if state == "open")
    check = {"ok": not opened and not hosts, "states": found}
    if hosts:
        check["held_back"] = [{"service": h.service, "host": h.host, "since": h.since, "error_code": h.code,
                               "message": h.message} for h in hosts]
    problems = [f"open: {', '.join(opened)}"] if opened else []
    problems += [f"{h.service} held back on host {h.host} ({h.code})" for h in hosts]
    if problems:
        check["error"] = "; ".join(problems)
    return check


def check_workers(settings) -> dict:
    client = state_redis()
    if client is None:
        return {"ok": None, "skipped": "no state Redis (set FLEET_STATE_REDIS_URL)"}
    try:
        workers = live_workers(client, settings.heartbeat_timeout)
    except Exception as exc:
        return {"ok": False, "error": _error(exc)}
    check = {"ok": bool(workers), "live": len(workers), "threads": sum(w.threads for w in workers)}
    if not workers:
        check["error"] = f"no worker has sent a heartbeat in {settings.heartbeat_timeout:g} s"
    return check


def check_scheduler() -> dict:
    client = state_redis()
    if client is None:
        return {"ok": None, "skipped": "no state Redis (set FLEET_STATE_REDIS_URL)"}
    try:
        leader = client.get(LEADER_KEY)
    except Exception as exc:
        return {"ok": False, "error": _error(exc)}
    if not leader:
        return {"ok": False, "error": "no scheduler leads (is `fleet scheduler` running?)"}
    return {"ok": True, "leader": leader.decode(errors="replace")}


def check_clock() -> dict:
    """Every process's clock against the fleet's (Redis TIME), this one's measured now."""
    client = state_redis()
    if client is None:
        return {"ok": None, "skipped": "no state Redis (set FLEET_STATE_REDIS_URL)"}
    try:
        clock.CLOCK.keep_measured(client, "web")
        found = clock.process_clocks(client)
    except Exception as exc:
        return {"ok": False, "error": _error(exc)}
    skewed = [c for c in found if c.skewed]
    check = {"ok": not skewed, "processes": len(found), "max_offset": clock.MAX_OFFSET,
             "skewed": [{"process": c.id, "kind": c.kind, "offset": c.offset} for c in skewed]}
    if skewed:
        check["error"] = "clock off the fleet's (Redis TIME) by over 1 s: " + "; ".join(
            f"{c.kind} {c.id} {c.described}" for c in skewed)
    return check


def check_outbox(settings) -> dict:
    """Jobs committed but not sent (Redis refused them): degraded once the scheduler should have
    sent them again (twice FLEET_OUTBOX_RESEND after their commit) and has not."""
    from actors.outbox import unsent

    try:
        count, oldest, error = unsent()
    except Exception as exc:
        return {"ok": False, "error": _error(exc)}
    check = {"ok": not count or oldest <= 2 * settings.outbox_resend, "unsent": count}
    if not check["ok"]:
        check["error"] = (f"{count} job(s) committed but not sent, the oldest for {oldest:.0f} s (is a scheduler "
                          f"running?){f'; last error: {error}' if error else ''}")
    return check


def run_checks(settings) -> dict:
    checks = {"database": check_database(), "broker": check_broker_health(settings)}
    skipped = {"ok": None, "skipped": "broker unreachable"}
    checks["queues"] = check_queues() if checks["broker"]["ok"] else skipped
    checks["error_rate"] = (check_error_rate() if checks["database"]["ok"]
                            else {"ok": None, "skipped": "database unreachable"})
    shares_broker = settings.state_redis_url == settings.broker_url
    state_ok = checks["broker"]["ok"] or not shares_broker
    checks["breakers"] = check_breakers() if state_ok else skipped
    checks["workers"] = check_workers(settings) if state_ok else skipped
    checks["scheduler"] = check_scheduler() if state_ok else skipped
    checks["clock"] = check_clock() if state_ok else skipped
    checks["alerts"] = (check_alerts() if checks["database"]["ok"]
                        else {"ok": None, "skipped": "database unreachable"})
    checks["outbox"] = (check_outbox(settings) if checks["database"]["ok"]
                        else {"ok": None, "skipped": "database unreachable"})
    if state_ok:
        _tell_alerts(checks)
    for check in checks.values():
        if check.get("error"):
            check["error"] = redact(check["error"])
    return checks


def check_alerts() -> dict:
    from actors.alerts.operations import health_check

    try:
        return health_check()
    except Exception as exc:
        return {"ok": False, "error": _error(exc)}


def _tell_alerts(checks: dict) -> None:
    """The database and broker checks, for the alert rule `unreachable` (kept in the state Redis)."""
    from actors.alerts import record_panel_check

    for name in ("database", "broker"):
        try:
            record_panel_check(name, bool(checks[name]["ok"]), checks[name].get("error"))
        except Exception:
            pass  # the state Redis is away too: the Health page says so


def summary(checks: dict, *, strict: bool = False) -> tuple[dict, int]:
    """The body and the HTTP status: 503 when a critical check fails (or, strict, any check)."""
    failing = [name for name in CRITICAL if checks[name]["ok"] is False]
    degraded = sorted(name for name, c in checks.items() if c["ok"] is False and name not in CRITICAL)
    body = {"status": "down" if failing else "degraded" if degraded else "ok", "checks": checks}
    if failing:
        body["failing"] = failing
    if degraded:
        body["degraded"] = degraded
    return body, 503 if failing or (strict and degraded) else 200


def current_checks() -> dict:
    settings = current_app.config["FLEET_SETTINGS"]
    return cached("health", CACHE_SECONDS, lambda: run_checks(settings))


def _logged_in() -> bool:
    return getattr(current_app, "login_manager", None) is not None and current_user.is_authenticated


@blueprint.route("/healthz")
def healthz():
    body, status = summary(current_checks(), strict=request.args.get("strict") in ("1", "true", "yes"))
    return jsonify(body if _logged_in() else {"status": body["status"]}), status
