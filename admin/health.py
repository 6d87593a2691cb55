"""/healthz: JSON with each check, 200 when all pass, 503 with the failing ones."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from db.database import database
from fleet.broker import BrokerUnavailable, check_broker

blueprint = Blueprint("health", __name__)


def check_database() -> dict:
    try:
        database.execute_sql("SELECT 1").fetchone()
        return {"ok": True}
    except Exception as exc:  # any driver error means the check fails
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def check_broker_health(settings) -> dict:
    try:
        check_broker(settings, wait=1.0)
        return {"ok": True}
    except BrokerUnavailable as exc:
        return {"ok": False, "error": str(exc)}


def run_checks(settings) -> dict:
    return {"database": check_database(), "broker": check_broker_health(settings)}


@blueprint.route("/healthz")
def healthz():
    checks = run_checks(current_app.config["FLEET_SETTINGS"])
    healthy = all(c["ok"] for c in checks.values())
    body = {"status": "ok" if healthy else "failing", "checks": checks}
    if not healthy:
        body["failing"] = sorted(name for name, c in checks.items() if not c["ok"])
    return jsonify(body), 200 if healthy else 503
