"""What the panel answers when a part it needs is down, or a request is malformed: a page
(or JSON under /api, /healthz, /metrics) naming what happened, never a stack trace.

Redis down: pages that need only the database keep working (login, job logs, failed plans,
error codes); a page or action that needs Redis answers 503 naming it. The database down:
503 naming it. /healthz handles its own failures (admin.health).
"""
from __future__ import annotations

import logging

import peewee
import pika.exceptions
import redis
from flask import Flask, jsonify, render_template, request
from limits.errors import StorageError
from werkzeug.exceptions import HTTPException

from core import trace
from core.redact import redact

log = logging.getLogger("fleet.panel")

OUTAGES = [
    ((redis.RedisError, StorageError), "Redis (the broker or the state store) does not answer"),
    ((pika.exceptions.AMQPError,), "the broker (RabbitMQ) does not answer"),
    ((peewee.OperationalError, peewee.InterfaceError), "the database does not answer"),
]


def _wants_json() -> bool:
    return request.path.startswith(("/api", "/healthz", "/metrics"))


def _answer(status: int, title: str, detail: str):
    if _wants_json():
        return jsonify(error=title, detail=detail, trace_id=trace.trace_id()), status
    return render_template("unavailable.html", title=title, detail=detail, trace_id=trace.trace_id()), status


def init_app(app: Flask) -> None:
    for exceptions, what in OUTAGES:
        def outage(exc, what=what):
            log.warning("request failed: %s", what, exc_info=exc)
            reason = redact(" ".join(str(exc).split()))[:500]
            return _answer(503, f"Unavailable: {what}.",
                           f"{type(exc).__name__}: {reason} Pages that do not need it still work; try again shortly.")
        for exc_class in exceptions:
            app.register_error_handler(exc_class, outage)

    @app.errorhandler(OverflowError)
    def overflow(exc):
        return _answer(400, "A number in the request is too large.", "Ids and page numbers fit in 64 bits.")

    @app.errorhandler(Exception)
    def unexpected(exc):
        if isinstance(exc, HTTPException):
            return exc
        log.exception("request failed")
        return _answer(500, "Something went wrong inside Fleet.",
                       "The error is in the web process's log under the trace id below.")
