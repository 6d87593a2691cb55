"""OpenAI's fleet-wide budget against the simulator enforcing limits per key, with `fleet worker`
processes: backlogs over the limit end generated, 429s stay rare, the simulator never sees more
than its limit in any window, the spend cap defers, unusable answers are asked for again.

A "minute" here is FLEET_OPENAI_WINDOW seconds, the simulator counting the same window."""
from __future__ import annotations

import re
import signal

import pytest

import actors.workouts as workouts
from db.models.ai import AISpend
from db.models.jobs import JobLog
from db.models.workouts import WorkoutPlan
from tests.helpers import wait_for
from tests.panel import csrf_token, failed_plan
from tests.test_series_budget import start_workers  # noqa: F401

WINDOW = "2"  # seconds the budget and the simulator count their limits over


def plans(n: int, days: int, goal: str = "strength") -> list:
    return [workouts.create_plan(workouts.User.create(email=f"u{i}@x.io").id, days, goal) for i in range(n)]


def count(status: str) -> int:
    return WorkoutPlan.select().where(WorkoutPlan.status == status).count()


def limited(openai_sim) -> tuple[int, int, dict]:
    """(requests, 429s from the limits, the simulator's limits view)."""
    described = openai_sim._get()
    return described["stats"]["requests"], described["stats"]["by_outcome"].get("429", 0), described["limits"]


def test_a_backlog_over_the_limit_is_generated_at_the_learned_limit(db, broker, openai_sim, start_workers):
    """40 requests a 2 s window (learned from the headers, no setting), 120 days queued at once,
    two processes of 8 threads: every day generated, a handful of 429s at most, never more than
    the limit (+ one) in any window, and the waits are deferrals that spend no retry."""
    openai_sim.control(rpm=40, window=float(WINDOW))
    made = plans(30, 4)
    start_workers(2, 8, FLEET_OPENAI_WINDOW=WINDOW)
    assert workouts.generate_pending() == (30, 0)
    wait_for(lambda: count("generated") == 120, timeout=90, message="120 days generated")
    requests, rejected, limits = limited(openai_sim)
    assert count("failed") == 0 and requests >= 120
    assert rejected <= 0.02 * requests, (rejected, requests)
    assert limits["busiest_window"] <= 41, limits
    rows = list(JobLog.select().where(JobLog.job_class == "generate_user_workout_plan"))
    assert {r.attempt for r in rows} == {1}  # nothing spent a retry
    deferred = [r for r in rows if r.status == "deferred"]
    assert deferred and all(r.error_code == "ERR_RATE_LIMIT" for r in deferred)
    assert any(re.search(r"over the shared OpenAI budget of 40 requests/2 s", r.message) for r in deferred)
    assert len(made) == 30


def test_a_token_bound_backlog_of_large_prompts(db, broker, openai_sim, start_workers):
    """Large prompts (~1,000 tokens each) against 12,000 tokens a window and a generous request
    limit: the tokens lane paces the calls; all generated, 429s rare."""
    openai_sim.control(rpm=10_000, tpm=12_000, window=float(WINDOW))
    plans(12, 2, goal="strength " + "and endurance " * 280)
    start_workers(2, 8, FLEET_OPENAI_WINDOW=WINDOW)
    workouts.generate_pending()
    wait_for(lambda: count("generated") == 24, timeout=90, message="24 days generated")
    requests, rejected, limits = limited(openai_sim)
    assert count("failed") == 0
    assert rejected <= max(1, 0.02 * requests), (rejected, requests, limits)
    assert limits["limited"].get("requests", 0) == 0


def test_a_429_defers_without_spending_a_retry(db, broker, worker, openai_sim):
    openai_sim.control(sequence=["429", "429"], retry_after=1)
    plan = plans(1, 1)[0]
    workouts.dispatch(plan.user_id, plan.id)
    wait_for(lambda: JobLog.select().where(JobLog.status == "success").exists(), timeout=30,
             message="the day generated after two 429s")
    assert count("generated") == 1
    rows = list(JobLog.select().where(JobLog.job_class == "generate_user_workout_plan").order_by(JobLog.id))
    assert [r.status for r in rows if r.status != "started"] == ["deferred", "deferred", "success"]
    assert all(r.attempt == 1 for r in rows)
    assert "waits" in rows[1].message or "deferred" in rows[1].message


def test_the_spend_cap_defers_the_rest_and_they_continue_when_it_is_raised(db, broker, openai_sim, start_workers):
    plans(8, 2)
    capped = start_workers(1, 4, FLEET_OPENAI_WINDOW="1", FLEET_OPENAI_DAILY_USD="0.0005")
    workouts.generate_pending()
    wait_for(lambda: JobLog.select().where(JobLog.error_code == "ERR_SPEND_CAP").exists(), timeout=60,
             message="jobs deferred at the cap")
    generated = count("generated")
    assert 0 < generated < 16 and count("failed") == 0
    row = JobLog.select().where(JobLog.error_code == "ERR_SPEND_CAP").first()
    assert row.status == "deferred" and "FLEET_OPENAI_DAILY_USD" in row.message
    spent = sum(r.usd for r in AISpend.select())
    assert spent >= 0.0005
    capped.send_signal(signal.SIGTERM)  # the cap raised as a setting is: a restart with the new value
    assert capped.wait(30) == 0
    start_workers(1, 4, FLEET_OPENAI_WINDOW="1", FLEET_OPENAI_DAILY_USD="5")
    wait_for(lambda: count("generated") == 16, timeout=60, message="the rest generated under the raised cap")
    assert count("failed") == 0


def test_an_unusable_answer_is_asked_for_again_then_fails_with_its_code(db, broker, worker, openai_sim):
    openai_sim.control(sequence=["malformed", "malformed", "ok"])
    good = plans(1, 1)[0]
    workouts.dispatch(good.user_id, good.id)
    wait_for(lambda: count("generated") == 1, timeout=30, message="generated on the third answer")
    assert openai_sim.stats()["requests"] == 3

    openai_sim.control(sequence=["malformed"] * 3)
    bad = workouts.create_plan(good.user_id, 1, "strength")
    workouts.dispatch(good.user_id, bad.id)
    wait_for(lambda: count("failed") == 1, timeout=30, message="failed after three unusable answers")
    day = WorkoutPlan.get(WorkoutPlan.plan == bad.id)
    assert day.error_code == "ERR_INVALID_RESPONSE" and "3 answers, none usable" in day.error_message
    assert openai_sim.stats()["requests"] == 6


def test_a_panel_retry_of_all_matching_over_the_limit_ends_all_generated(admin_client, db, broker, openai_sim,
                                                                         start_workers):
    openai_sim.control(rpm=30, window=float(WINDOW))
    failed = [failed_plan(f"f{i}@x.io", days=3, code="ERR_API_TIMEOUT") for i in range(20)]
    start_workers(2, 8, FLEET_OPENAI_WINDOW=WINDOW)
    page = admin_client.get("/admin/failed-plans/?flt0_error_code_equals=ERR_API_TIMEOUT").text
    assert re.search(r"At the OpenAI budget: ≈ \d+ (s|min) at \d+ requests/", page)  # in the confirmation
    admin_client.post("/admin/failed-plans/retry-matching/?flt0_error_code_equals=ERR_API_TIMEOUT",
                      data={"csrf_token": csrf_token(admin_client, "/admin/")})
    wait_for(lambda: count("generated") == 60, timeout=90, message="60 days generated")
    requests, rejected, limits = limited(openai_sim)
    assert count("failed") == 0 and rejected <= 0.02 * requests
    assert limits["busiest_window"] <= 31, (limits, openai_sim.stats()["per_second"])
    assert len(failed) == 20


def test_status_in_the_cli_the_dashboard_and_metrics(admin_client, db, broker, worker, openai_sim):
    """Limits learned from the simulator's headers, the calls of the last window, spend today
    against the cap, the backlog: the same figures in `fleet ai status`, on the dashboard, in /metrics."""
    import json
    import os

    from tests.helpers import fleet

    openai_sim.control(rpm=600, tpm=500_000)
    plan = plans(1, 3)[0]
    workouts.dispatch(plan.user_id, plan.id)
    wait_for(lambda: count("generated") == 3, timeout=30, message="three days generated")
    workouts.create_plan(plan.user_id, 5, "strength")  # a backlog of five calls, not dispatched
    result = fleet("ai", "status", "--json", env={**os.environ, "FLEET_OPENAI_DAILY_USD": "2.5"})
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["budget"]["requests"] == {"used": 3, "limit": 600, "source": "learned"}
    assert status["budget"]["tokens"]["limit"] == 500_000 and status["budget"]["tokens"]["used"] > 0
    assert status["spend"]["usd"] > 0 and status["spend"]["cap_usd"] == 2.5 and not status["spend"]["capped"]
    assert status["spend"]["by_job_class"][0]["job_class"] == "generate_user_workout_plan"
    assert status["backlog"]["calls"] == 5 and status["backlog"]["estimate"].startswith("≈ ")
    text = fleet("ai", "status").stdout
    assert "requests: 3 of 600 (learned)" in text and "Backlog: 5 call(s), ≈ 1 s at 600 requests/min" in text

    page = admin_client.get("/admin/").text
    block = re.search(r'id="ai-dashboard">(.*?)</div>\s*</div>\s*</div>', page, re.S).group(1)
    assert re.search(r"requests in the last min</td><td[^>]*>\s*3 of 600", block)
    assert "5 call(s), ≈ 1 s at 600 requests/min" in block
    metrics = admin_client.get("/metrics").text
    assert 'fleet_openai_budget_limit{limit="requests",source="learned"} 600.0' in metrics
    assert "fleet_openai_backlog_calls 5.0" in metrics


def test_the_simulator_enforces_limits_per_key_like_the_provider():
    import requests

    from core.simulators.openai_sim import start_openai_simulator

    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}], "max_completion_tokens": 50}

    def ask(key: str, **changes):
        return requests.post(f"{sim.url}/chat/completions", json={**body, **changes},
                             headers={"Authorization": f"Bearer {key}"}, timeout=5)

    with start_openai_simulator(rpm=2, tpm=200, window=60) as sim:
        first, second, third = ask("k1"), ask("k1"), ask("k1")
        assert first.status_code == second.status_code == 200
        assert first.headers["x-ratelimit-limit-requests"] == "2" and first.headers["x-ratelimit-remaining-requests"] == "1"
        assert first.headers["x-ratelimit-limit-tokens"] == "200"
        assert third.status_code == 429 and third.json()["error"]["code"] == "rate_limit_exceeded"
        assert 20 <= float(third.headers["retry-after-ms"]) / 1000 <= 31  # half a minute for one request
        assert ask("k2").status_code == 200  # another key, its own buckets
        assert ask("k3", max_completion_tokens=150).status_code == 200  # the token bucket holds it
        low = ask("k3", max_completion_tokens=190)  # charged its usage, the bucket has no room for this one
        assert low.status_code == 429 and low.json()["error"]["type"] == "tokens"
        cut = ask("k4", max_completion_tokens=1)
        assert cut.json()["choices"][0]["finish_reason"] == "length"
        assert sim._get()["limits"]["busiest_window"] == 7


@pytest.mark.parametrize("variable", ["OPENAI_RPM", "OPENAI_TPM", "OPENAI_TIMEOUT", "FLEET_OPENAI_DAILY_USD"])
def test_bad_settings_are_refused(variable):
    from core.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match=variable):
        load_settings({variable: "-1"})
