"""Alert rules files (`fleet alerts check`) and the evaluation's state machine, in process, on the
test Redis and database: each kind fires on its real signal, repeats after its interval,
resolves once, and a rule's subjects are told apart."""
from __future__ import annotations

import os
from datetime import timedelta

import pytest

from actors.alerts.conditions import record_panel_check
from actors.alerts.evaluate import Evaluation
from actors.alerts.rules import KINDS, SHIPPED, load_rules
from actors.middleware.joblog import DROPPED_KEY
from core.state import state_redis
from db.models import utcnow
from db.models.alerts import AlertEvent, AlertState
from db.models.batches import Batch
from db.models.jobs import JobLog
from tests.helpers import fleet


def write_rules(tmp_path, text: str):
    path = tmp_path / "alerts.toml"
    path.write_text(text)
    return path


def test_the_default_rules_are_valid_and_every_kind_is_on():
    rules = load_rules("default")
    on = {r.kind for r in rules.enabled}
    assert on == set(KINDS)
    assert rules.rules["batch-asked"].params["asked_only"] and not rules.rules["batch-finished"].enabled
    assert rules.rules["breaker-open"].severity == "critical"
    assert rules.delivery_retries == (10.0, 60.0, 300.0, 1800.0)
    assert (SHIPPED / "default.toml").is_file()


def test_fleet_alerts_check_refuses_a_bad_file_with_a_line_a_problem(tmp_path):
    path = write_rules(tmp_path, '[ok]\nkind = "queue_depth"\n'
                                 '[typo]\nkind = "breaker_opne"\n'
                                 '[slow]\nkind = "queue_wait"\nmax_age = "ten minutes"\n'
                                 '[rate]\nkind = "failure_rate"\nthreshold = 2\nwindw = "5m"\n'
                                 '[svc]\nkind = "breaker_open"\nservices = ["openia"]\nseverity = "loud"\n')
    result = fleet("alerts", "check", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 4
    assert lines[0].startswith(f"fleet: {path}: [typo] kind must be one of breaker_open")
    assert "[slow] max_age: 'ten minutes' is not a duration" in lines[1]
    assert "[rate] unknown key 'windw' for kind failure_rate" in lines[2]
    assert "[svc] severity must be one of info, warning, critical, not 'loud'" in lines[3]

    good = fleet("alerts", "check")
    assert good.returncode == 0 and "15 rules, all valid." in good.stdout
    missing = fleet("alerts", "check", "nonesuch")
    assert missing.returncode == 2 and "no rules file 'nonesuch'" in missing.stderr
    not_toml = fleet("alerts", "check", str(write_rules(tmp_path, "[x\n")))
    assert not_toml.returncode == 2 and "not a valid TOML file" in not_toml.stderr
    no_server = fleet("alerts", "check", env={**os.environ, "FLEET_ALERT_EMAIL_TO": "ops@example.test"})
    assert no_server.returncode == 2 and "FLEET_SMTP_URL: must be set when FLEET_ALERT_EMAIL_TO is" in no_server.stderr


def test_silence_names_a_known_rule_and_a_duration(db):
    assert fleet("alerts", "silence", "no-such-rule", "--for", "2h").returncode == 1
    bad = fleet("alerts", "silence", "long-wait", "--for", "2 hours")
    assert bad.returncode == 2 and "'2 hours' is not a duration" in bad.stderr


@pytest.fixture
def evaluate(db, broker, tmp_path):
    """Evaluate a rules file at a given moment (no channel is configured: notifications are recorded)."""
    state_redis().delete(DROPPED_KEY)

    def run(text: str, now=None):
        return Evaluation(load_rules(write_rules(tmp_path, text)), now).run()

    return run


def events() -> list[tuple[str, str, str]]:
    return [(e.rule, e.subject, e.state) for e in AlertEvent.select().order_by(AlertEvent.id)]


def test_a_rule_fires_once_repeats_after_its_interval_and_resolves_once(evaluate, broker):
    from tests.worker_actors import count

    rules = '[deep]\nkind = "queue_depth"\nmax_ready = 2\nrepeat = "10m"\n'
    for _ in range(3):
        count.send("k")
    start = utcnow()
    assert evaluate(rules, start)["told"] == 1
    assert evaluate(rules, start + timedelta(minutes=5))["told"] == 0
    assert evaluate(rules, start + timedelta(minutes=11))["told"] == 1
    assert events() == [("deep", "tests", "firing"), ("deep", "tests", "firing")]
    state = AlertState.get(AlertState.rule == "deep")
    assert state.labels == {"queue": "tests", "ready": 3} and state.notifications == 2
    broker.client.delete("fleet:tests", "fleet:tests.msgs")
    assert evaluate(rules, start + timedelta(minutes=12))["told"] == 1
    assert evaluate(rules, start + timedelta(minutes=13))["told"] == 0
    resolved = AlertEvent.select().order_by(AlertEvent.id.desc()).first()
    assert resolved.state == "resolved" and resolved.duration_seconds == pytest.approx(720, abs=1)


def test_counters_hosts_checks_and_batches_fire_on_their_signals(evaluate):
    rules = ('[dropped]\nkind = "joblog_dropped"\ngrowth = 5\nwindow = "15m"\n'
             '[lost]\nkind = "host_lost"\nwindow = "1h"\n'
             '[down]\nkind = "unreachable"\n'
             '[done]\nkind = "batch_finished"\nrepeat = "0s"\n'
             '[asked]\nkind = "batch_finished"\nasked_only = true\n')
    evaluate(rules)
    assert events() == []
    state_redis().incrby(DROPPED_KEY, 7)
    JobLog.create(run_id="r1", job_class="workouts.generate", message_id="m1", queue="workouts", status="started",
                  worker="ghost-host:4242", created_at=utcnow() - timedelta(minutes=5))
    record_panel_check("database", False, "OperationalError: connection refused")
    Batch.create(id="b" * 36, kind="translation", title="de→nl", status="completed", total=3, succeeded=3,
                 chunk_size=50, finished_at=utcnow())
    Batch.create(id="c" * 36, kind="translation", title="nl→de", status="failed", total=3, failed=3,
                 chunk_size=50, finished_at=utcnow(), options={"notify": True})
    evaluate(rules)
    assert sorted(events()) == [("asked", "c" * 36, "firing"), ("done", "b" * 36, "firing"),
                                ("done", "c" * 36, "firing"), ("down", "database", "firing"),
                                ("dropped", "", "firing"), ("lost", "ghost-host", "firing")]
    summaries = {e.rule: e.summary for e in AlertEvent.select()}
    assert summaries["dropped"].startswith("7 job attempts got no JobLog row")
    assert "ghost-host stopped sending heartbeats while it held 1 job(s)" in summaries["lost"]
    record_panel_check("database", True)
    Batch.update(finished_at=utcnow() - timedelta(hours=1)).execute()
    evaluate(rules)
    assert ("down", "database", "resolved") in events()
    assert ("done", "b" * 36, "resolved") not in events(), "a finished batch is told once, nothing resolves"


def test_the_alert_channels_secrets_never_reach_a_log_line(monkeypatch):
    from core.redact import redact

    monkeypatch.setenv("FLEET_ALERT_WEBHOOK_URL", "https://hooks.example.test/services/T01/B02/xoxSecretPart")
    monkeypatch.setenv("FLEET_SMTP_URL", "smtps://alerts:mail-pa55word@mail.example.test:465")
    line = redact("POST https://hooks.example.test/services/T01/B02/xoxSecretPart failed; login alerts/mail-pa55word")
    assert "xoxSecretPart" not in line and "mail-pa55word" not in line


def test_ai_spend_fires_near_the_cap_and_when_the_cap_defers_jobs(evaluate, monkeypatch):
    import dataclasses

    import core.settings
    from core import spend
    from db.models.ai import AISpend

    AISpend.delete().execute()
    rules = '[spend]\nkind = "ai_spend"\nshare = 0.8\nwindow = "15m"\n'
    assert evaluate(rules)["firing"] == 0  # no cap set: silent however much is spent
    settings = dataclasses.replace(core.settings.get_settings(), openai_daily_usd=1.0)
    monkeypatch.setattr(core.settings, "_current", settings)

    AISpend.create(day=spend.today(), job_class="generate_user_workout_plan", usd=0.5)
    assert evaluate(rules)["firing"] == 0
    AISpend.update(usd=0.85).execute()
    evaluate(rules)
    assert AlertState.get(AlertState.rule == "spend").summary == "OpenAI spend $0.85 is 85% of the daily cap $1"
    JobLog.create(run_id="r-cap", job_class="generate_user_workout_plan", message_id="m-cap", queue="workouts", status="deferred",
                  attempt=1, error_code="ERR_SPEND_CAP", message="today's OpenAI spend has reached the cap")
    evaluate(rules)
    assert "reached the daily cap $1: 1 AI job attempt(s) deferred" in AlertState.get(AlertState.rule == "spend").summary
