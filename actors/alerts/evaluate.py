"""The evaluation: each rule's findings against the state in the database, and the
notifications that follow. It runs in one place, the task `alerts.evaluate` that the
scheduler's leader emits every 30 s; each slot is emitted once however many schedulers run,
and every change of state below is a conditional UPDATE, so even two evaluations at once
(a redelivered copy) tell each change once.

A subject (a service, a queue, an actor …) of a rule is told when it starts firing, again
each `repeat` while it still fires, and once when it resolves, with how long it lasted. While
a rule is silenced its changes are recorded, and no one is told.

Each notification goes to each channel as its own message (`alerts.deliver`), retried with the
file's `delivery_retries`, so a channel that is down neither delays the other nor the evaluation.
"""
from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone

from actors.alerts.channels import (
    ChannelError,
    Channels,
    load_channels,
    panel_link,
    send,
)
from actors.alerts.conditions import Finding, findings
from actors.alerts.rules import Rule, Rules, load_rules
from actors.runtime import fleet_actor, task
from core import formats
from core.errors import JobError
from core.settings import SettingsError
from core.state import state_redis
from db.database import database
from db.models import utcnow
from db.models.alerts import AlertDelivery, AlertEvent, AlertSilence, AlertState

log = logging.getLogger("fleet.alerts")

EVALUATED_KEY = "fleet:alerts:evaluated"  # unix time of the last evaluation that ran to its end
EVALUATE_QUEUE = "alerts"
DELIVERY_QUEUE = "alert-deliveries"


def active_silences(now: datetime | None = None) -> dict[str, AlertSilence]:
    now = now or utcnow()
    found = {}
    for row in (AlertSilence.select().where((AlertSilence.until > now) & AlertSilence.lifted_at.is_null())
                .order_by(AlertSilence.until)):
        found[row.rule] = row  # the one lasting longest
    return found


def alert_payload(state: AlertState, event_state: str, public_url: str | None, duration: float | None = None) -> dict:
    """The `alert` object a channel gets (webhook JSON, e-mail text)."""
    alert = {"rule": state.rule, "kind": state.kind, "state": event_state, "severity": state.severity,
             "summary": state.summary, "subject": state.subject,
             "since": state.since.replace(tzinfo=timezone.utc).isoformat(timespec="seconds"),
             "labels": dict(state.labels or {}), "link": panel_link(public_url, state.rule)}
    if duration is not None:
        alert["duration_seconds"] = round(duration)
        alert["lasted"] = formats.roughly(duration)
    return alert


class Evaluation:
    def __init__(self, rules: Rules, now: datetime | None = None):
        self.rules = rules
        self.now = now or utcnow()
        self.channels = _channels()
        self.silences = active_silences(self.now)
        self.told: list[dict] = []
        self.recorded = 0

    def run(self) -> dict:
        states: dict[str, dict[str, AlertState]] = {}
        for row in AlertState.select():
            states.setdefault(row.rule, {})[row.subject] = row
        failed = []
        for rule in self.rules.enabled:
            try:
                found = {f.subject: f for f in findings(rule)}
            except Exception:  # one signal that cannot be read leaves its rule as it stands
                log.exception("could not evaluate an alert rule", extra={"rule": rule.name})
                failed.append(rule.name)
                continue
            mine = states.get(rule.name, {})
            for subject, finding in found.items():
                self._firing(rule, finding, mine.get(subject))
            for subject, row in mine.items():
                if row.state == "firing" and subject not in found:
                    self._resolved(rule, row)
        enabled = {r.name for r in self.rules.enabled}
        for name, rows in states.items():  # rules taken out of the file, or disabled: resolved quietly
            if name not in enabled:
                for row in rows.values():
                    if row.state == "firing":
                        _change(row, state="resolved", resolved_at=self.now)
        firing = AlertState.select().where(AlertState.state == "firing").count()
        client = state_redis()
        if client is not None:
            client.set(EVALUATED_KEY, time.time())
        return {"rules": len(enabled), "firing": firing, "told": len(self.told), "unreadable": failed}

    def _firing(self, rule: Rule, finding: Finding, row: AlertState | None) -> None:
        silence = self.silences.get(rule.name)
        if row is None:
            with database.atomic():
                inserted = (AlertState.insert(rule=rule.name, subject=finding.subject, kind=rule.kind,
                                              severity=rule.severity, state="firing", summary=finding.summary,
                                              labels=finding.labels, since=self.now, notifications=0,
                                              updated_at=self.now)
                            .on_conflict_ignore().execute())
            row = AlertState.get_or_none((AlertState.rule == rule.name) & (AlertState.subject == finding.subject))
            if not inserted or row is None:
                return  # another evaluation took it
            self._tell(rule, row, "firing", silence)
            return
        if row.state == "resolved":
            if rule.is_event:
                return  # an event is told once
            if _change(row, state="firing", since=self.now, resolved_at=None, last_notified_at=None,
                       summary=finding.summary, labels=finding.labels, severity=rule.severity, kind=rule.kind):
                self._tell(rule, row, "firing", silence)
            return
        # still firing: keep the summary fresh; tell again when the repeat is due (or the silence ended)
        due = (row.last_notified_at is None
               or (rule.repeat and row.last_notified_at + timedelta(seconds=rule.repeat) <= self.now))
        if silence is None and due:
            if _change(row, summary=finding.summary, labels=finding.labels, severity=rule.severity,
                       last_notified_at=self.now, notifications=row.notifications + 1):
                self._notify(row, "firing")
        elif row.summary != finding.summary or row.labels != finding.labels:
            AlertState.update(summary=finding.summary, labels=finding.labels, updated_at=self.now).where(
                AlertState.id == row.id).execute()

    def _resolved(self, rule: Rule, row: AlertState) -> None:
        was_told = row.last_notified_at is not None
        if not _change(row, state="resolved", resolved_at=self.now):
            return
        if rule.is_event:
            return
        silence = self.silences.get(rule.name)
        if silence is not None or not was_told:
            self._record(row, "resolved", silenced=silence.created_by if silence else "not told while firing",
                         duration=(self.now - row.since).total_seconds())
            return
        self._notify(row, "resolved", duration=(self.now - row.since).total_seconds())

    def _tell(self, rule: Rule, row: AlertState, state: str, silence: AlertSilence | None) -> None:
        if silence is not None:
            self._record(row, state, silenced=silence.created_by)
            return
        if _change(row, last_notified_at=self.now, notifications=row.notifications + 1):
            self._notify(row, state)

    def _record(self, row: AlertState, state: str, silenced: str | None = None, duration: float | None = None):
        self.recorded += 1
        return AlertEvent.create(rule=row.rule, subject=row.subject, kind=row.kind, severity=row.severity,
                                 state=state, summary=row.summary, labels=row.labels, since=row.since,
                                 duration_seconds=duration, silenced=silenced, created_at=self.now)

    def _notify(self, row: AlertState, state: str, duration: float | None = None) -> None:
        event = self._record(row, state, duration=duration)
        alert = alert_payload(row, state, self.channels.public_url, duration)
        alert["event"] = event.id
        self.told.append(alert)
        log.warning("alert", extra={"rule": row.rule, "state": state, "severity": row.severity,
                                    "subject": row.subject, "summary": row.summary})
        dispatch(event.id, alert, self.channels.names, self.rules.delivery_retries)


def _channels() -> Channels:
    """The configured channels; with a bad setting, none (logged): the alerts are still recorded,
    and the Alerts page and `fleet alerts check` say what is wrong."""
    try:
        return load_channels()
    except SettingsError:
        log.error("alert channels misconfigured: alerts are recorded, no one is told", exc_info=True)
        return Channels(None, None, (), "", None)


def _change(row: AlertState, **fields) -> bool:
    """Update the row if no one else changed it since it was read; True when this call did."""
    fields["updated_at"] = utcnow()
    query = AlertState.update(**fields).where((AlertState.id == row.id) & (AlertState.updated_at == row.updated_at))
    if query.execute() != 1:
        return False
    for name, value in fields.items():
        setattr(row, name, value)
    return True


def dispatch(event_id: int | None, alert: dict, channel_names: list[str], retries: tuple[float, ...]) -> list[int]:
    """A delivery row and a message for each channel; returns the delivery ids."""
    ids = []
    for channel in channel_names:
        delivery = AlertDelivery.create(event_id=event_id, channel=channel, status="sending", attempts=0,
                                        updated_at=utcnow())
        deliver_alert.send_with_options(args=(delivery.id, channel, alert), retry_delays=retries)
        ids.append(delivery.id)
    return ids


def _gave_up(message, error) -> None:
    AlertDelivery.update(status="failed", updated_at=utcnow()).where(AlertDelivery.id == message.args[0]).execute()


@fleet_actor(queue_name=DELIVERY_QUEUE, retry_delays=(10, 60, 300, 1800), on_give_up=_gave_up)
def deliver_alert(delivery_id: int, channel: str, alert: dict) -> str:
    """Send one notification to one channel; a channel that fails is tried again later."""
    try:
        answer = send(channel, load_channels(), alert)
    except ChannelError as exc:
        AlertDelivery.update(status="retrying" if exc.retryable else "failed", answer=exc.answer,
                             attempts=AlertDelivery.attempts + 1, updated_at=utcnow()).where(
            AlertDelivery.id == delivery_id).execute()
        raise JobError("ERR_API_UNAVAILABLE" if exc.retryable else "ERR_BAD_REQUEST",
                       f"alert {channel}: {exc.answer}") from None
    AlertDelivery.update(status="sent", answer=answer, attempts=AlertDelivery.attempts + 1,
                         updated_at=utcnow()).where(AlertDelivery.id == delivery_id).execute()
    return answer


@task("alerts.evaluate")
@fleet_actor(queue_name=EVALUATE_QUEUE, retry_delays=(), time_limit=60_000)
def evaluate_alerts() -> dict:
    """Evaluate every rule of FLEET_ALERTS once; notify what started, repeats or ended."""
    return Evaluation(load_rules()).run()
