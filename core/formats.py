"""How times and durations read, the same in the CLI and the panel (its Jinja filters are these)."""
from __future__ import annotations

import re
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # times in UTC, as the database keeps them
LOCAL_FORMAT = TIME_FORMAT + " %Z"  # times in a named zone say which
SPAN_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def moment(value: datetime | str | None, tz: str | None = None, empty: str = "") -> str:
    """A time (naive UTC from the database, aware, or ISO text) as `2026-01-31 02:00:00`, or in
    the zone `tz` as `2026-01-31 03:00:00 CET`."""
    if not value:
        return empty
    if isinstance(value, str):
        value = datetime.fromisoformat(value.removesuffix("Z"))
    if tz is None:
        return (value.astimezone(timezone.utc) if value.tzinfo else value).strftime(TIME_FORMAT)
    aware = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return aware.astimezone(ZoneInfo(tz)).strftime(LOCAL_FORMAT)


def seconds(value: float | None, digits: int = 2, empty: str = "") -> str:
    """A measured time as `1.25 s`."""
    return empty if value is None else f"{value:.{digits}f} s"


def duration(value: float | None, empty: str = "-") -> str:
    """A span to the second: `45 s`, `3 min 05 s`, `2 h 04 min`."""
    if value is None:
        return empty
    hours, rest = divmod(int(value), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def roughly(value: float) -> str:
    """A span in its largest sensible unit: `45 s`, `12 min`, `2.0 h`, `3.5 d`."""
    if value < 120:
        return f"{value:.0f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    if value < 172800:
        return f"{value / 3600:.1f} h"
    return f"{value / 86400:.1f} d"


def parse_span(text) -> int | None:
    """A span as files write it ("90s", "10m", "1h30m"; units s, m, h, d) in seconds, or None
    when it is not one."""
    parts = re.findall(r"(\d+)([smhd])", text) if isinstance(text, str) else []
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(int(n) * SPAN_UNITS[u] for n, u in parts)


def ago(value: float) -> str:
    """How long ago, in whole units: `40 s ago`, `5 min ago`, `30 h ago` (hours up to two days,
    so "older than 24 h" reads as such), `3 d ago`."""
    value = max(0.0, value)
    for unit, size, from_ in (("d", 86_400, 2 * 86_400), ("h", 3_600, 3_600), ("min", 60, 60)):
        if value >= from_:
            return f"{value // size:.0f} {unit} ago"
    return f"{value:.0f} s ago"


def since(value: datetime | str | None, now: datetime | None = None, empty: str = "") -> str:
    """How long ago a time (naive UTC, as the database keeps it, aware, or ISO text) was: `2 min ago`."""
    if not value:
        return empty
    if isinstance(value, str):
        value = datetime.fromisoformat(value.removesuffix("Z"))
    if value.tzinfo:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    now = now or datetime.now(timezone.utc).replace(tzinfo=None)
    return ago((now - value).total_seconds())
