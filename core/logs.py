"""Log lines on stderr: human lines, or one JSON object a line with the context of the job at
hand when FLEET_LOG_FORMAT=json (what `fleet up` keeps in var/log/)."""
from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

from core import trace
from core.redact import redact
from core.settings import Settings

CONTEXT_FIELDS = ("trace_id", "actor", "message_id", "attempt", "error_code", "queue")
_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **trace.current(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(line, default=str))


class TextFormatter(logging.Formatter):
    """`2026-01-05 10:00:00 WARNING fleet.joblog: message [actor=… error_code=…]`, redacted."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = {k: v for k, v in trace.current().items() if k != "trace_id" and v is not None}
        context.update((k, v) for k, v in record.__dict__.items() if k not in _RESERVED and not k.startswith("_"))
        if context:
            line += " [" + " ".join(f"{k}={v}" for k, v in context.items()) + "]"
        return redact(line)


class _FleetHandler(logging.StreamHandler):
    """The one handler configure_logging installs (so a second call leaves it be)."""


def configure_logging(settings: Settings, level: int = logging.INFO) -> None:
    root = logging.getLogger()
    if any(isinstance(h, _FleetHandler) for h in root.handlers):
        return
    handler = _FleetHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("urllib3", "httpx", "waitress.queue"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # pika logs every refused socket as an error; Dramatiq reports broker trouble itself.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
