"""What each kind of rule watches: `findings(rule)` reads Fleet's signals (breakers, JobLog,
queues, the schedule ledger, worker presence, the processes' clocks, batches, the panel's health checks) and returns
one Finding a subject that is in trouble now; an empty list means the rule does not fire.

Counters that only grow (dead letters, dropped JobLog rows) are sampled into the state Redis
at each evaluation, so a rule can ask how much one grew within its window.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import timedelta

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from peewee import SQL, Case, fn

from actors.alerts.rules import Rule
from actors.middleware.joblog import DROPPED_KEY
from actors.middleware.presence import live_workers
from actors.schedule import LEADER_KEY, history, schedulers
from core import clock, formats, spend
from core.breakers import states
from core.queues import known_queues, queue_depths
from core.settings import get_settings
from core.state import state_redis
from db.models import utcnow
from db.models.batches import Batch
from db.models.jobs import JobLog
from db.models.schedule import ScheduleRun

SAMPLES_PREFIX = "fleet:alerts:samples:"
SAMPLES_KEPT = 86400  # seconds of samples a counter keeps
PANEL_CHECK_PREFIX = "fleet:alerts:panel-check:"  # + check name: the panel's last answer (JSON)
FAILED = ("failed", "retrying")
LEDGER_LOOKBACK = timedelta(days=2)  # entries with a slot this recent are looked at
LEDGER_ROWS = 500  # the newest rows of an entry read for a streak


@dataclass(frozen=True)
class Finding:
    subject: str  # what is in trouble: "openai", "workouts", an actor, "" for the fleet
    summary: str  # one line an operator understands
    labels: dict = field(default_factory=dict)


def findings(rule: Rule) -> list[Finding]:
    return WATCHERS[rule.kind](rule.params)


def _breakers(p: dict) -> list[Finding]:
    wanted = p["services"]
    return [Finding(service, f"{service} breaker is {state}: calls to it fail, its jobs wait", {"service": service})
            for service, state in states().items() if state != "closed" and (not wanted or service in wanted)]


def _held_back(p: dict) -> list[Finding]:
    """Hosts whose own breaker holds back their jobs while the fleet's is closed (their fault, not the provider's)."""
    from core.breakers import held_back

    wanted = p["services"]
    return [Finding(f"{h.service}@{h.host}",
                    f"{h.service} held back on host {h.host} ({h.code}): its own calls fail while other hosts' succeed",
                    {"service": h.service, "host": h.host, "error_code": h.code})
            for h in held_back() if not wanted or h.service in wanted]


def _failure_rate(p: dict) -> list[Finding]:
    since = utcnow() - timedelta(seconds=p["window"])
    finished = ("success", *FAILED)
    query = (JobLog.select(JobLog.job_class, fn.COUNT(SQL("*")),
                           fn.SUM(_is(JobLog.error_code == p["error_code"]) if p["error_code"]
                                  else _is(JobLog.status.in_(FAILED))))
             .where(JobLog.status.in_(finished) & (JobLog.created_at >= since)))
    if p["actor"]:
        query = query.where(JobLog.job_class == p["actor"])
    found = []
    for actor, attempts, failed in query.group_by(JobLog.job_class).tuples():
        failed = int(failed or 0)
        if attempts >= p["min_attempts"] and failed / attempts >= p["threshold"]:
            what = f"with {p['error_code']}" if p["error_code"] else "failed"
            found.append(Finding(actor, f"{actor}: {failed} of {attempts} attempts {what} in the last "
                                        f"{formats.roughly(p['window'])}", {"actor": actor, **_code(p)}))
    return found


def _is(condition):
    return Case(None, [(condition, 1)], 0)


def _code(p: dict) -> dict:
    return {"error_code": p["error_code"]} if p["error_code"] else {}


def oldest_ready_ages(broker=None) -> dict[str, float]:
    """Seconds the oldest ready message of each queue has waited (since it was sent, or since
    its delay ended); queues with none ready are left out. Redis only: two reads a queue."""
    broker = broker or dramatiq.get_broker()
    if not isinstance(broker, RedisBroker):
        return {}
    ns = broker.namespace
    names = known_queues(broker)
    with broker.client.pipeline(transaction=False) as pipe:
        for q in names:
            pipe.lindex(f"{ns}:{q}", 0)
        heads = pipe.execute()
    with broker.client.pipeline(transaction=False) as pipe:
        for q, head in zip(names, heads):
            pipe.hget(f"{ns}:{q}.msgs", head or b"-")
        bodies = pipe.execute()
    now = time.time()
    ages = {}
    for q, body in zip(names, bodies):
        if not body:
            continue
        try:
            message = json.loads(body)
        except ValueError:
            continue
        ready_since = max(message.get("message_timestamp", 0), message.get("options", {}).get("eta", 0)) / 1000
        ages[q] = max(0.0, now - ready_since)
    return ages


def _queue_wait(p: dict) -> list[Finding]:
    return [Finding(q, f"queue {q}: the oldest ready message has waited {formats.roughly(age)} for a worker",
                    {"queue": q, "age_seconds": round(age)})
            for q, age in sorted(oldest_ready_ages().items())
            if age > p["max_age"] and (not p["queue"] or q == p["queue"])]


def _queue_depth(p: dict) -> list[Finding]:
    return [Finding(d.queue, f"queue {d.queue}: {d.ready:,} messages ready (limit {p['max_ready']:,})",
                    {"queue": d.queue, "ready": d.ready})
            for d in queue_depths(dramatiq.get_broker())
            if d.ready > p["max_ready"] and (not p["queue"] or d.queue == p["queue"])]


def growth(name: str, value: int, window: float) -> int:
    """How much a counter grew within the last `window` seconds, from samples kept in Redis
    (this call adds one); 0 until there is an earlier sample."""
    client = state_redis()
    if client is None:
        return 0
    key = SAMPLES_PREFIX + name
    now = time.time()
    with client.pipeline(transaction=False) as pipe:
        pipe.zadd(key, {f"{now}:{value}": now})
        pipe.zremrangebyscore(key, "-inf", now - SAMPLES_KEPT)
        pipe.zrangebyscore(key, now - window, "+inf", start=0, num=1)
        pipe.zrevrangebyscore(key, now - window, "-inf", start=0, num=1)  # the last one before the window
        _, _, inside, before = pipe.execute()
    base = before or inside
    return max(0, value - int(base[0].decode().rsplit(":", 1)[1])) if base else 0


def _dead_letters(p: dict) -> list[Finding]:
    depths = queue_depths(dramatiq.get_broker())
    grown = growth("dead_letters", sum(d.dead for d in depths), p["window"])
    if grown < p["growth"]:
        return []
    per_queue = ", ".join(f"{d.queue} {d.dead}" for d in depths if d.dead)
    return [Finding("", f"{grown} new dead letters in {formats.roughly(p['window'])} (now: {per_queue})", {"grown": grown})]


def _bad(run: ScheduleRun) -> bool:
    return run.state == "missed" or (run.state == "skipped" and (run.detail or "").startswith("overlap"))


def _schedule_missed(p: dict) -> list[Finding]:
    """An entry with `in_a_row` slots or more missed (no scheduler emitted them) or skipped for
    overlap, one after the other: while that is the entry's latest news, and for `window` after
    its last such slot (a scheduler that comes back emits the next slot, and still its gap is told)."""
    now = utcnow()
    names = [p["entry"]] if p["entry"] else [
        row.name for row in ScheduleRun.select(ScheduleRun.name).where(ScheduleRun.slot_time >= now - LEDGER_LOOKBACK)
        .distinct()]
    found = []
    for name in sorted(names):
        runs = history(name, LEDGER_ROWS)  # newest first
        streak: list[ScheduleRun] = []
        latest = True  # no slot went well after the streak
        for run in runs + [None]:
            if run is not None and _bad(run):
                streak.append(run)
                continue
            if len(streak) >= p["in_a_row"]:
                break
            streak = []
            latest = False
        if len(streak) < p["in_a_row"]:
            continue
        newest, oldest = streak[0], streak[-1]
        if not latest and now - newest.slot_time > timedelta(seconds=p["window"]):
            continue
        why = "missed" if all(r.state == "missed" for r in streak) else "missed or skipped (overlap)"
        found.append(Finding(name, f"schedule entry {name}: {len(streak)} slots in a row {why}, "
                                   f"{oldest.slot_time:%Y-%m-%d %H:%M:%S} to {newest.slot_time:%H:%M:%S} UTC "
                                   f"({newest.detail or newest.state})", {"entry": name}))
    return found


def _no_scheduler(p: dict) -> list[Finding]:
    client = state_redis()
    if client is None or client.get(LEADER_KEY):
        return []
    running = schedulers()
    return [Finding("", f"no scheduler leads ({len(running)} running): no slot is emitted",
                    {"schedulers": len(running)})]


def _host_lost(p: dict) -> list[Finding]:
    """Jobs started in the window by a worker process that no longer sends heartbeats and
    never finished them: the host (or process) went away holding work."""
    settings = get_settings()
    client = state_redis()
    if client is None:
        return []
    live = {w.id.rsplit(":", 1)[0] for w in live_workers(client, settings.heartbeat_timeout)}
    now = utcnow()
    rows = (JobLog.select(JobLog.worker, fn.COUNT(SQL("*")))
            .where(JobLog.status.in_(("started", "abandoned"))  # abandoned: its message was redelivered
                   & (JobLog.created_at >= now - timedelta(seconds=p["window"]))
                   & (JobLog.created_at <= now - timedelta(seconds=settings.heartbeat_timeout)))
            .group_by(JobLog.worker).tuples())
    lost: dict[str, int] = {}
    for worker, held in rows:
        if worker and worker not in live:
            host = worker.rsplit(":", 1)[0]
            lost[host] = lost.get(host, 0) + held
    return [Finding(host, f"worker host {host} stopped sending heartbeats while it held {held} job(s); "
                          "they run again elsewhere", {"host": host, "jobs": held})
            for host, held in sorted(lost.items())]


def _clock_skew(p: dict) -> list[Finding]:
    """Processes (workers, schedulers, web) whose clock is over `max_offset` off the fleet's
    (Redis TIME), as each last measured it."""
    client = state_redis()
    if client is None:
        return []
    return [Finding(c.id, f"{c.kind} {c.id}: its clock is {clock.versus_fleet(c.offset)}; "
                          "fix the host's time sync (NTP, chrony)",
                    {"process": c.id, "kind": c.kind, "host": c.host, "offset_seconds": round(c.offset, 1)})
            for c in clock.process_clocks(client) if abs(c.offset) > p["max_offset"]]


def _joblog_dropped(p: dict) -> list[Finding]:
    client = state_redis()
    if client is None:
        return []
    grown = growth("joblog_dropped", int(client.get(DROPPED_KEY) or 0), p["window"])
    if grown < p["growth"]:
        return []
    return [Finding("", f"{grown} job attempts got no JobLog row in {formats.roughly(p['window'])} "
                        "(a worker's buffer was full while the database was away)", {"dropped": grown})]


def record_panel_check(name: str, ok: bool, error: str | None = None) -> None:
    """The panel's health check of the database or the broker, for the `unreachable` rule."""
    client = state_redis()
    if client is not None:
        client.set(PANEL_CHECK_PREFIX + name, json.dumps({"ok": ok, "at": time.time(), "error": error}), ex=3600)


def _unreachable(p: dict) -> list[Finding]:
    client = state_redis()
    if client is None:
        return []
    found = []
    for name in p["checks"]:
        raw = client.get(PANEL_CHECK_PREFIX + name)
        check = json.loads(raw) if raw else None
        if check and not check["ok"] and time.time() - check["at"] <= p["within"]:
            what = "the database" if name == "database" else "Redis (the broker)"
            found.append(Finding(name, f"the panel cannot reach {what}: {check.get('error') or 'no answer'}",
                                 {"check": name}))
    return found


def _batch_finished(p: dict) -> list[Finding]:
    since = utcnow() - timedelta(seconds=p["window"])
    batches = Batch.select().where(Batch.status.in_(p["statuses"]) & (Batch.finished_at >= since))
    if p["asked_only"]:  # batches created with options {"notify": true}
        batches = [b for b in batches if (b.options or {}).get("notify") is True]
    return [Finding(b.id, f"batch {b.title or b.kind} {b.status}: {b.succeeded} succeeded, {b.failed} failed "
                          f"of {b.total}", {"batch": b.id, "status": b.status})
            for b in sorted(batches, key=lambda b: b.finished_at)]


def _ai_spend(p: dict) -> list[Finding]:
    """Today's OpenAI spend at `share` of FLEET_OPENAI_DAILY_USD, or AI jobs deferred by the cap."""
    cap = get_settings().openai_daily_usd
    if not cap:
        return []
    spent = spend.spent_today()
    since = utcnow() - timedelta(seconds=p["window"])
    capped = (JobLog.select().where((JobLog.error_code == "ERR_SPEND_CAP") & (JobLog.status == "deferred")
                                    & (JobLog.created_at >= since)).count())
    if capped:
        return [Finding("openai", f"OpenAI spend ${spent:.2f} reached the daily cap ${cap:g}: {capped} AI job "
                                  f"attempt(s) deferred in {formats.roughly(p['window'])} (until tomorrow or a "
                                  "higher FLEET_OPENAI_DAILY_USD)", {"service": "openai"})]
    if spent >= p["share"] * cap:
        return [Finding("openai", f"OpenAI spend ${spent:.2f} is {spent / cap:.0%} of the daily cap ${cap:g}",
                        {"service": "openai"})]
    return []


WATCHERS = {
    "breaker_open": _breakers,
    "host_held_back": _held_back,
    "failure_rate": _failure_rate,
    "queue_wait": _queue_wait,
    "queue_depth": _queue_depth,
    "dead_letters": _dead_letters,
    "schedule_missed": _schedule_missed,
    "no_scheduler": _no_scheduler,
    "host_lost": _host_lost,
    "clock_skew": _clock_skew,
    "joblog_dropped": _joblog_dropped,
    "unreachable": _unreachable,
    "ai_spend": _ai_spend,
    "batch_finished": _batch_finished,
}
