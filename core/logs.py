"""Structured logs: one JSON object a line, with the context of the job at hand."""
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


def configure_logging(settings: Settings, level: int = logging.INFO) -> None:
    root = logging.getLogger()
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("urllib3", "httpx", "waitress.queue"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # pika logs every refused socket as an error; Dramatiq reports broker trouble itself.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
