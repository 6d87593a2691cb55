"""AI work at the provider's limit, as operators see it: the OpenAI budget in use, 429s and
deferrals of the last hour, today's spend against the cap, and how long the AI backlog needs at
the budget. Built once here; `fleet ai status`, the dashboard and /metrics render it."""
from __future__ import annotations

from peewee import fn

from core import spend
from core.openai_budget import openai_budget
from core.settings import get_settings
from db.models.batches import Batch, BatchItem
from db.models.workouts import WorkoutPlan

AI_BATCH_KINDS = ("translation",)  # batch kinds whose items call OpenAI (a panel retry only dispatches jobs)


def backlog_calls() -> int:
    """Calls the AI work waiting now will make, at least: a pending plan day is one, an open
    translation item one or more."""
    days = WorkoutPlan.select(fn.COUNT(WorkoutPlan.id)).where(WorkoutPlan.status == "pending").scalar() or 0
    items = (BatchItem.select(fn.COUNT(BatchItem.id)).join(Batch, on=(BatchItem.batch == Batch.id))
             .where(Batch.kind.in_(AI_BATCH_KINDS) & BatchItem.status.in_(("pending", "running"))).scalar() or 0)
    return days + items


def status() -> dict:
    """Everything `fleet ai status` prints, as plain data (the JSON of `--json`)."""
    budget = openai_budget()
    limits = budget.limits()
    used_requests, used_tokens = budget.used()
    calls = backlog_calls()
    cap = get_settings().openai_daily_usd
    spent = spend.spent_today()
    return {
        "budget": {"enabled": budget.enabled, "window_seconds": budget.window, "per": budget.per(),
                   "requests": {"used": used_requests, "limit": limits.requests, "source": limits.requests_source},
                   "tokens": {"used": used_tokens, "limit": limits.tokens, "source": limits.tokens_source},
                   "shrunk_to": limits.shrunk},
        "last_hour": {"rate_limited": budget.last_hour("429"), "deferred": budget.last_hour("deferred")},
        "spend": {"day": spend.today().isoformat(), "timezone": get_settings().timezone, "usd": round(spent, 6),
                  "cap_usd": cap, "capped": bool(cap) and spent >= cap, "by_job_class": spend.by_job_class()},
        "backlog": {"calls": calls, "seconds": round(budget.seconds_for(calls), 1),
                    "estimate": budget.estimate(calls)},
    }


def limit_text(part: dict) -> str:
    """"1,200 of 240,000 (learned)"; "no limit" when the provider announces none."""
    if not part["limit"]:
        return f"{part['used']:,} (no limit announced)"
    return f"{part['used']:,} of {part['limit']:,} ({part['source']})"


def spend_text(spend_part: dict) -> str:
    cap = f" of ${spend_part['cap_usd']:,.2f} cap" if spend_part["cap_usd"] else " (no cap)"
    reached = " — reached: AI jobs wait" if spend_part["capped"] else ""
    return f"${spend_part['usd']:,.4f}{cap}{reached}"
