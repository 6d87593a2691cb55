"""Keeps secrets out of logs, JobLog rows and the panel."""
from __future__ import annotations

import re

from fleet.settings import get_settings

MASK = "***"
_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"\bsk-[A-Za-z0-9_-]{8,}"),
    re.compile(r"(?i)((?:api[_-]?key|apikey|token|password|secret)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}&]{4,}"),
    re.compile(r"(://[^:/@\s]+:)[^@\s]+(@)"),
]


def _secret_values() -> list[str]:
    settings = get_settings()
    values = [settings.openai_api_key, settings.series_api_key, settings.secret_key_override]
    return [v for v in values if v and len(v) >= 4]


def redact(text: str | None) -> str | None:
    if not text:
        return text
    for value in _secret_values():
        text = text.replace(value, MASK)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + MASK + (m.group(2) if m.re.groups > 1 else ""), text)
    return text
