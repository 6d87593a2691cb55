"""What operators do with alerts, shared by `fleet alerts …` and the panel: read the state and
the history, silence and unsilence a rule, send a test to every channel, and what the Health
page shows (a warning-level rule firing, a channel that keeps failing)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from actors.alerts.channels import ChannelError, load_channels, send
from actors.alerts.evaluate import EVALUATED_KEY, active_silences
from actors.alerts.rules import Rules
from core import formats
from core.errors import FleetError
from core.state import state_redis
from db.models import utcnow
from db.models.alerts import AlertDelivery, AlertEvent, AlertSilence, AlertState

MAX_SILENCE = 30 * 86400
EVALUATION_STALE = 180  # seconds without an evaluation (it runs every 30 s) before Health says so
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}
FAILING_CHANNEL = ("retrying", "failed")


def states() -> list[AlertState]:
    """Every rule's subjects, firing first (the most severe first), then the latest resolved."""
    rows = list(AlertState.select())
    return sorted(rows, key=lambda r: (r.state != "firing", SEVERITY_ORDER.get(r.severity, 3),
                                       -(r.since.timestamp() if r.state == "firing" else
                                         (r.resolved_at or r.since).timestamp())))


def firing() -> list[AlertState]:
    return [r for r in states() if r.state == "firing"]


def history(limit: int = 50, rule: str | None = None) -> list[AlertEvent]:
    query = AlertEvent.select().order_by(AlertEvent.created_at.desc(), AlertEvent.id.desc()).limit(limit)
    if rule:
        query = query.where(AlertEvent.rule == rule)
    return list(query)


def deliveries(event_ids: list[int]) -> dict[int, list[AlertDelivery]]:
    found: dict[int, list[AlertDelivery]] = {}
    if event_ids:
        for row in AlertDelivery.select().where(AlertDelivery.event_id.in_(event_ids)).order_by(AlertDelivery.id):
            found.setdefault(row.event_id, []).append(row)
    return found


def silences(include_past: int = 20) -> list[AlertSilence]:
    """Silences in force, then the latest ended ones."""
    now = utcnow()
    current = list(active_silences(now).values())
    past = list(AlertSilence.select().where((AlertSilence.until <= now) | AlertSilence.lifted_at.is_null(False))
                .order_by(AlertSilence.created_at.desc()).limit(include_past))
    return current + past


def silence(rules: Rules, rule: str, seconds: float, by: str, reason: str | None = None) -> AlertSilence:
    rules.rule(rule)  # an unknown rule is refused, with the names
    if not 0 < seconds <= MAX_SILENCE:
        raise FleetError(f"a silence lasts more than 0 s and at most {formats.roughly(MAX_SILENCE)}", exit_code=2)
    now = utcnow()
    return AlertSilence.create(rule=rule, until=now + timedelta(seconds=seconds), reason=reason or None,
                               created_by=by, created_at=now)


def unsilence(rule: str, by: str) -> int:
    """Lift the rule's silences in force; how many there were."""
    now = utcnow()
    return (AlertSilence.update(lifted_at=now, lifted_by=by)
            .where((AlertSilence.rule == rule) & (AlertSilence.until > now) & AlertSilence.lifted_at.is_null())
            .execute())


@dataclass(frozen=True)
class TestAnswer:
    channel: str
    ok: bool
    answer: str


def send_test(by: str) -> list[TestAnswer]:
    """A test notification to every configured channel, now (not queued); what each answered."""
    channels = load_channels()
    now = datetime.now(timezone.utc)
    alert = {"rule": "test", "kind": "test", "state": "test", "severity": "info", "subject": "",
             "summary": f"sent by {by}", "since": now.isoformat(timespec="seconds"), "labels": {"by": by},
             "link": f"{channels.public_url}/admin/alerts/" if channels.public_url else None}
    answers = []
    for channel in channels.names:
        try:
            answers.append(TestAnswer(channel, True, send(channel, channels, alert)))
        except ChannelError as exc:
            answers.append(TestAnswer(channel, False, exc.answer))
    try:  # recorded like any delivery: a test that goes through clears a failing channel on Health
        for answer in answers:
            AlertDelivery.create(channel=answer.channel, status="sent" if answer.ok else "failed", attempts=1,
                                 answer=answer.answer, updated_at=utcnow())
    except Exception:
        pass  # the database is away: the answers are still printed
    return answers


def failing_channels(recent: int = 5) -> dict[str, AlertDelivery]:
    """Channels whose latest delivery is retrying or failed: the Health page shows them."""
    failing = {}
    for channel in ("webhook", "email"):
        latest = (AlertDelivery.select().where((AlertDelivery.channel == channel) & (AlertDelivery.status != "sending"))
                  .order_by(AlertDelivery.updated_at.desc()).first())
        if latest is not None and latest.status in FAILING_CHANNEL:
            failing[channel] = latest
    return failing


def since_text(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return f"{formats.moment(moment)} UTC ({formats.ago((utcnow() - moment).total_seconds())})"


def seconds_since_evaluation() -> float | None:
    """How long ago the last evaluation ended; None when none ever did (or no state Redis)."""
    client = state_redis()
    value = client.get(EVALUATED_KEY) if client is not None else None
    return max(0.0, time.time() - float(value)) if value else None


def health_check() -> dict:
    """For /healthz and the Health page: not ok while a rule of warning level or above fires,
    or while a channel keeps failing (its latest notification retrying or given up)."""
    serious = [r for r in firing() if r.severity in ("warning", "critical")]
    failing = failing_channels()
    check = {"ok": not serious and not failing, "firing": len(firing()),
             "rules": sorted({r.rule for r in serious}),
             "channels": {c: f"{d.status}: {d.answer or ''}"[:200] for c, d in failing.items()}}
    problems = [f"{len(serious)} alert(s) firing: {', '.join(check['rules'])}"] if serious else []
    problems += [f"alert channel {c} failing ({d.status} after {d.attempts} attempt(s))" for c, d in failing.items()]
    age = seconds_since_evaluation()
    check["evaluated_seconds_ago"] = None if age is None else round(age)
    if age is not None and age > EVALUATION_STALE:
        check["ok"] = False
        problems.append(f"alerts not evaluated for {formats.roughly(age)} (is a scheduler leading, and a worker reading "
                        "the queue `alerts`?)")
    if problems:
        check["error"] = "; ".join(problems)
    return check
