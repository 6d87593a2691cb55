"""The daily AI spend cap: what every call cost (its `usage` priced by the client's table), kept a
day of FLEET_TIMEZONE and job class in the database, so it survives a Redis loss; when today's spend
reaches FLEET_OPENAI_DAILY_USD, AI calls are deferred (ERR_SPEND_CAP) until the next day or until
the cap is raised. The deferral does not count towards FLEET_MAX_DEFER: nothing fails because of it.
"""
from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from peewee import EXCLUDED, fn

from core import trace
from core.budget import Deferred
from core.settings import get_settings
from db.models.ai import AISpend

RECHECK_WINDOWS = 5  # a deferred job looks again after this many budget windows (5 min in production)


def _now() -> datetime:
    return datetime.now(ZoneInfo(get_settings().timezone))


def today() -> date:
    return _now().date()


def seconds_to_midnight() -> float:
    now = _now()
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), now.tzinfo)
    return max(1.0, (midnight - now).total_seconds())


def record(usd: float, prompt_tokens: int, completion_tokens: int, job_class: str | None = None,
           requests: int = 1) -> None:
    """Add one call (or `requests` calls) to today's row of its job class (the actor at hand, or `cli`)."""
    job_class = job_class or trace.current().get("actor") or "cli"
    (AISpend.insert(day=today(), job_class=job_class, usd=usd, requests=requests, prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens)
     .on_conflict(conflict_target=[AISpend.day, AISpend.job_class],
                  update={AISpend.usd: AISpend.usd + EXCLUDED.usd,
                          AISpend.requests: AISpend.requests + EXCLUDED.requests,
                          AISpend.prompt_tokens: AISpend.prompt_tokens + EXCLUDED.prompt_tokens,
                          AISpend.completion_tokens: AISpend.completion_tokens + EXCLUDED.completion_tokens})
     .execute())


def spent_today() -> float:
    return float(AISpend.select(fn.COALESCE(fn.SUM(AISpend.usd), 0)).where(AISpend.day == today()).scalar() or 0)


def by_job_class(day: date | None = None) -> list[dict]:
    rows = (AISpend.select().where(AISpend.day == (day or today())).order_by(AISpend.usd.desc()))
    return [{"job_class": r.job_class, "usd": round(r.usd, 6), "requests": r.requests,
             "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens} for r in rows]


def check_cap() -> None:
    """Deferred (ERR_SPEND_CAP) when today's spend has reached the cap."""
    settings = get_settings()
    cap = settings.openai_daily_usd
    if not cap:
        return
    spent = spent_today()
    if spent >= cap:
        wait = min(seconds_to_midnight(), RECHECK_WINDOWS * settings.openai_window)
        raise Deferred("ERR_SPEND_CAP", f"today's OpenAI spend ${spent:.4f} has reached the cap "
                                        f"FLEET_OPENAI_DAILY_USD=${cap:g}; deferred until tomorrow "
                                        "or until the cap is raised", wait, counts=False)
