"""Keeps secrets out of logs, JobLog rows and the panel."""
from __future__ import annotations

import os
import re
from functools import lru_cache
from urllib.parse import urlparse

from core.settings import get_settings

MASK = "***"
# Each alternative keeps its prefix (group `keep`) and masks the rest; one pass over the text.
_SECRET = re.compile(
    r"(?i)(?P<keep>bearer\s+)[A-Za-z0-9._~+/=-]{8,}"
    r"|\bsk-[A-Za-z0-9_-]{8,}"
    r"|(?P<keep2>(?:api[_-]?key|apikey|token|password|secret)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}&]{4,}"
    r"|(?P<keep3>://[^:/@\s]*:)[^@\s]+(?P<at>@)"
)


def _mask(match: re.Match) -> str:
    groups = match.groupdict()
    prefix = groups["keep"] or groups["keep2"] or groups["keep3"] or ""
    return prefix + MASK + (groups["at"] or "")


def _secret_values() -> tuple[str, ...]:
    settings = get_settings()
    return _values(settings.openai_api_key, settings.series_api_key, settings.secret_key_override,
                   os.environ.get("FLEET_ALERT_WEBHOOK_URL", ""), os.environ.get("FLEET_SMTP_URL", ""))


@lru_cache(maxsize=16)
def _values(*sources: str | None) -> tuple[str, ...]:
    """The secrets to mask, worked out once for each set of `_secret_values`' sources (redact runs
    several times a job)."""
    *keys, webhook_url, smtp_url = sources
    # alert channels (read by actors.alerts.channels): a webhook's path is its key, and the SMTP password
    values = [*keys, urlparse(webhook_url or "").path.strip("/"), urlparse(smtp_url or "").password]
    return tuple(v for v in values if v and len(v) >= 4)


def redact(text: str | None) -> str | None:
    if not text:
        return text
    for value in _secret_values():
        text = text.replace(value, MASK)
    return _SECRET.sub(_mask, text)
