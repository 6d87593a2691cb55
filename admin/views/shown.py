"""How the pages show a time and an error code (Jinja filters and helpers of the views)."""
from __future__ import annotations

from markupsafe import Markup

from core import formats
from core.errors import CODES


def when(value, tz: str | None = None) -> Markup:
    """A time as UTC (or in `tz`) with how long ago beside it: `2026-01-31 02:00:00 · 2 min ago`."""
    if not value:
        return Markup("")
    return Markup('{} <small class="text-muted fleet-ago">{}</small>').format(formats.moment(value, tz),
                                                                             formats.since(value))


def code_sentence(code: str | None) -> str:
    return CODES[code].sentence if code in CODES else ""
