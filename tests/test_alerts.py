"""Alerts with real processes: two `fleet scheduler`s emitting the evaluation, a real worker,
the OpenAI simulator, a real HTTP receiver as the webhook and a real SMTP server (aiosmtpd).
The evaluation runs every second and the rules have short windows, so each case takes seconds."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from actors.workouts import dispatch
from db.models.alerts import AlertDelivery, AlertEvent, AlertSilence, AlertState
from db.models.schedule import ScheduleRun
from db.models.workouts import Plan, User, WorkoutPlan
from tests.alert_channels import SmtpServer, WebhookReceiver
from tests.helpers import REPO, wait_for
from tests.test_schedule import note_entry
from tests.test_schedule_daemon import run_fleet, shared_db  # noqa: F401  (fixtures)

PUBLIC_URL = "https://fleet.example.test"
EVALUATE_EVERY_SECOND = '[alerts-evaluate]\ntask = "alerts.evaluate"\nevery = "1s"\n'


@pytest.fixture
def webhook():
    receiver = WebhookReceiver(fail_first=2)
    yield receiver
    receiver.stop()


@pytest.fixture
def smtp():
    server = SmtpServer()
    yield server
    server.stop()


@pytest.fixture
def alert_fleet(run_fleet, tmp_path, webhook, smtp):
    """Start schedulers and a worker on a schedule and a rules file, told to the test channels."""
    for model in (AlertState, AlertEvent, AlertDelivery, AlertSilence):  # PostgreSQL is kept over the session
        model.delete().execute()

    def start(schedule: str, rules: str, **env):
        rules_path = tmp_path / "alerts.toml"
        rules_path.write_text('delivery_retries = ["1s", "1s", "1s"]\n' + rules)
        fleet_ = run_fleet(schedule, FLEET_ALERTS=str(rules_path), FLEET_ALERT_WEBHOOK_URL=webhook.url,
                           FLEET_SMTP_URL=smtp.url, FLEET_ALERT_EMAIL_TO="ops@example.test,oncall@example.test",
                           FLEET_ALERT_EMAIL_FROM="fleet@example.test", FLEET_PUBLIC_URL=PUBLIC_URL,
                           FLEET_RETRY_DELAYS="1,2,2,2,2,2", **env)
        fleet_.alert_worker = lambda *queues: fleet_.processes.worker(
            "--processes", "1", "--threads", "4", *(["--queues", *queues] if queues else []), env=fleet_.env)
        return fleet_

    return start


def fleet_command(fleet_, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleet", *args], env=fleet_.env, cwd=REPO, capture_output=True,
                          text=True, timeout=60)


def test_an_openai_outage_is_told_once_per_channel_and_once_when_it_ends(alert_fleet, webhook, smtp, openai_sim,
                                                                         shared_db):
    """Two schedulers, every-second evaluation: the OpenAI breaker opening fires one notification
    to the webhook (which refuses its first two tries, and gets it on the third) and one e-mail
    (not held back by the webhook); the repeat interval is not due, so nothing more while it
    lasts; when the simulator answers again, one `resolved` with how long it lasted."""
    rules = '[openai-down]\nkind = "breaker_open"\nservices = ["openai"]\nseverity = "critical"\nrepeat = "1h"\n'
    fleet_ = alert_fleet(EVALUATE_EVERY_SECOND, rules)
    fleet_.scheduler()
    fleet_.scheduler()
    fleet_.alert_worker()
    fleet_.wait_leader()

    openai_sim.control(fail={"503": 1.0})
    user = User.create(email=f"outage-{os.urandom(3).hex()}@example.test")
    plans = [Plan.create(user=user, goal="strength", days=2) for _ in range(3)]
    for plan in plans:
        for day in (1, 2):
            WorkoutPlan.create(plan=plan, day=day, status="pending")
        dispatch(user.id, plan.id)

    wait_for(lambda: smtp.subjects("openai-down firing"), timeout=120, message="the e-mail about the outage")
    wait_for(lambda: webhook.alerts("openai-down", "firing"), timeout=60, message="the webhook, on its third try")
    mail_at = smtp.messages[0]["at"]
    assert webhook.refused == 2
    assert mail_at < webhook.posts[0]["at"], "the e-mail did not wait for the failing webhook"
    # the outage goes on over several evaluations: no second notification (repeat is 1 h)
    _evaluations(fleet_)
    wait_for(lambda: _evaluations(fleet_) >= 5, timeout=30, message="five more evaluations")
    assert len(webhook.alerts("openai-down")) == 1
    assert len(smtp.subjects("openai-down")) == 1

    alert = webhook.alerts("openai-down", "firing")[0]
    assert alert["kind"] == "breaker_open" and alert["severity"] == "critical"
    assert alert["labels"] == {"service": "openai"}
    assert alert["link"] == f"{PUBLIC_URL}/admin/alerts/?rule=openai-down"
    assert "openai breaker" in alert["summary"] and alert["since"].endswith("+00:00")
    text = webhook.posts[0]["body"]["text"]
    assert "openai-down firing" in text and PUBLIC_URL in text
    assert sorted(smtp.messages[0]["to"]) == ["oncall@example.test", "ops@example.test"]
    assert "Rule:      openai-down (breaker_open)" in smtp.messages[0]["body"]
    webhook_delivery = AlertDelivery.get(AlertDelivery.channel == "webhook")
    assert (webhook_delivery.status, webhook_delivery.attempts) == ("sent", 3)
    assert "s3cretHookToken" not in (webhook_delivery.answer or "")

    openai_sim.control(fail={})
    wait_for(lambda: webhook.alerts("openai-down", "resolved") and smtp.subjects("openai-down resolved"),
             timeout=60, message="told that it is over")
    resolved = webhook.alerts("openai-down", "resolved")[0]
    assert resolved["duration_seconds"] >= 1 and resolved["since"] == alert["since"]
    wait_for(lambda: all(w.status == "generated" for w in WorkoutPlan.select().where(WorkoutPlan.plan.in_(plans))),
             timeout=60, message="plans done")
    assert len(webhook.alerts("openai-down")) == 2 and len(smtp.messages) == 2
    assert [e.state for e in AlertEvent.select().order_by(AlertEvent.id)] == ["firing", "resolved"]
    logs = "".join(p.read_text(errors="replace") for p in fleet_.processes.logs.glob("*.log"))
    assert "s3cretHookToken" not in logs


def _evaluations(fleet_) -> int:
    """Evaluations that ran since the first call."""
    done = ScheduleRun.select().where((ScheduleRun.name == "alerts-evaluate") & (ScheduleRun.state == "succeeded"))
    if not hasattr(fleet_, "evaluations_from"):
        fleet_.evaluations_from = done.count()
    return done.count() - fleet_.evaluations_from


def test_a_long_wait_and_skipped_slots_fire_and_a_silence_holds(alert_fleet, webhook, smtp, shared_db):
    """A queue no worker reads: its message waits (long wait fires) and the entry's next slots
    are skipped for overlap (the missed-slot rule fires). The long-wait rule was silenced first:
    it is recorded, not told, until the silence is lifted."""
    webhook.fail_first = 0
    schedule = EVALUATE_EVERY_SECOND + note_entry("stuck", 'every = "1s"')
    rules = ('[long-wait]\nkind = "queue_wait"\nqueue = "tests"\nmax_age = "3s"\n'
             '[stuck-slots]\nkind = "schedule_missed"\nentry = "stuck"\nin_a_row = 3\nrepeat = "0s"\n')
    fleet_ = alert_fleet(schedule, rules)
    silenced = fleet_command(fleet_, "alerts", "silence", "long-wait", "--for", "1h", "--reason", "known")
    assert silenced.returncode == 0, silenced.stderr
    assert "long-wait silenced until" in silenced.stdout
    fleet_.scheduler()
    fleet_.alert_worker("alerts", "alert-deliveries")  # nothing reads "tests"

    wait_for(lambda: webhook.alerts("stuck-slots", "firing"), timeout=60, message="the skipped slots told")
    alert = webhook.alerts("stuck-slots", "firing")[0]
    assert alert["labels"] == {"entry": "stuck"} and "skipped (overlap)" in alert["summary"]
    wait_for(lambda: AlertState.get_or_none(AlertState.rule == "long-wait"), timeout=30, message="long wait fires")
    state = AlertState.get(AlertState.rule == "long-wait")
    assert state.state == "firing" and state.labels["queue"] == "tests" and state.last_notified_at is None
    silenced_event = AlertEvent.get(AlertEvent.rule == "long-wait")
    assert silenced_event.silenced.startswith(os.environ.get("USER", "")) or "@" in silenced_event.silenced
    assert not webhook.alerts("long-wait") and not smtp.subjects("long-wait")

    listing = fleet_command(fleet_, "alerts", "list")
    assert listing.returncode == 0, listing.stderr
    assert "FIRING" in listing.stdout and "long-wait" in listing.stdout and "until" in listing.stdout

    lifted = fleet_command(fleet_, "alerts", "unsilence", "long-wait")
    assert "silence lifted" in lifted.stdout
    wait_for(lambda: webhook.alerts("long-wait", "firing"), timeout=30, message="told once the silence is lifted")
    assert "oldest ready message has waited" in webhook.alerts("long-wait")[0]["summary"]
    history = fleet_command(fleet_, "alerts", "history", "--limit", "10")
    assert "stuck-slots" in history.stdout and "silenced" in history.stdout and "webhook sent" in history.stdout
    assert len(webhook.alerts("stuck-slots")) == 1


def test_fleet_alerts_test_says_what_each_channel_answered(alert_fleet, webhook, smtp, shared_db):
    webhook.fail_first = 1
    fleet_ = alert_fleet(EVALUATE_EVERY_SECOND, '[x]\nkind = "no_scheduler"\n')
    failed = fleet_command(fleet_, "alerts", "test")
    assert failed.returncode == 1
    assert "webhook: FAILED: http://127.0.0.1" in failed.stdout and "HTTP 500 busy" in failed.stdout
    assert "email: ok: smtp://127.0.0.1" in failed.stdout and "accepted for 2 of 2 recipient(s)" in failed.stdout
    assert "s3cretHookToken" not in failed.stdout + failed.stderr
    ok = fleet_command(fleet_, "alerts", "test")
    assert ok.returncode == 0 and "webhook: ok:" in ok.stdout and "HTTP 200 ok" in ok.stdout
    assert webhook.posts[0]["body"]["alert"]["state"] == "test" and len(smtp.messages) == 2
    assert smtp.messages[0]["subject"].startswith("[test] Fleet alerts reach this channel")


def test_slots_missed_while_no_scheduler_ran_are_told_when_one_is_back(alert_fleet, webhook, shared_db):
    """The only scheduler stops for a few seconds over an every-second entry: the one started
    next records those slots as missed, and its first evaluations tell it once."""
    webhook.fail_first = 0
    schedule = EVALUATE_EVERY_SECOND + note_entry("tick", 'every = "1s"', "without_overlapping = false")
    rules = '[tick-missed]\nkind = "schedule_missed"\nentry = "tick"\nin_a_row = 3\nwindow = "1h"\nrepeat = "1h"\n'
    fleet_ = alert_fleet(schedule, rules, FLEET_SCHEDULE_GRACE="1")
    first = fleet_.scheduler()
    fleet_.alert_worker()
    wait_for(lambda: ScheduleRun.select().where((ScheduleRun.name == "tick") & (ScheduleRun.state == "succeeded"))
             .count() >= 2, message="tick runs")
    first.terminate()
    first.wait(10)
    wait_for(lambda: ScheduleRun.select().where(ScheduleRun.state.in_(("claimed", "emitted", "running"))).count() == 0,
             message="the last runs done")
    stopped = ScheduleRun.select().where(ScheduleRun.name == "tick").count()
    time.sleep(5)  # a downtime over five slots
    assert ScheduleRun.select().where(ScheduleRun.name == "tick").count() == stopped
    assert not webhook.alerts("tick-missed")
    fleet_.scheduler()
    wait_for(lambda: webhook.alerts("tick-missed", "firing"), timeout=60, message="the missed slots told")
    alert = webhook.alerts("tick-missed", "firing")[0]
    assert "slots in a row missed" in alert["summary"] and alert["labels"] == {"entry": "tick"}
    missed = ScheduleRun.select().where((ScheduleRun.name == "tick") & (ScheduleRun.state == "missed")).count()
    assert missed >= 3
    _evaluations(fleet_)
    wait_for(lambda: _evaluations(fleet_) >= 3, timeout=30, message="three more evaluations")
    assert len(webhook.alerts("tick-missed")) == 1
