"""The API simulators over real HTTP: answers, faults, the control endpoint, the CLI."""
from __future__ import annotations

import json
import random
import subprocess
import threading

import jsonschema
import pytest
import requests

from core.net import free_port
from core.simulators import start_openai_simulator, start_series_simulator
from core.simulators.faults import parse_fail_spec
from core.simulators.openai_sim import generate
from tests.helpers import fleet, wait_for

KEY = "sk-test-simulator-0123456789"

PLAN_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["title", "level", "days", "rest", "intensity", "note", "kind"],
    "properties": {
        "title": {"type": "string", "minLength": 3, "maxLength": 40},
        "level": {"type": "integer", "minimum": 1, "maximum": 3},
        "days": {"type": "array", "minItems": 2, "maxItems": 4, "items": {"$ref": "#/$defs/day"}},
        "rest": {"type": "boolean"},
        "intensity": {"type": "number", "minimum": 0.5, "maximum": 0.9},
        "note": {"type": ["string", "null"]},
        "kind": {"anyOf": [{"type": "string", "enum": ["strength", "cardio"]}, {"type": "null"}]},
    },
    "$defs": {
        "day": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "sets", "reps"],
            "properties": {
                "name": {"type": "string"},
                "sets": {"type": "integer", "exclusiveMinimum": 0, "maximum": 5},
                "reps": {"type": "array", "items": {"type": "integer", "minimum": 5, "maximum": 15}},
            },
        }
    },
}


def chat(sim, messages, schema=None, key=KEY, **extra):
    """POST a chat completion to `sim` (a simulator, or its `/v1` URL)."""
    body = {"model": "gpt-4o-mini", "messages": messages, **extra}
    if schema is not None:
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "plan", "strict": True, "schema": schema}}
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    url = sim if isinstance(sim, str) else sim.url
    return requests.post(f"{url}/chat/completions", json=body, headers=headers, timeout=10)


@pytest.fixture
def openai_sim():
    sim = start_openai_simulator(api_key=KEY)
    yield sim
    sim.stop()


@pytest.fixture
def series_sim():
    sim = start_series_simulator(api_key="tvdb-key", missing=[404404])
    yield sim
    sim.stop()


def login(sim, key="tvdb-key"):
    url = sim if isinstance(sim, str) else sim.url
    return requests.post(f"{url}/login", json={"apikey": key}, timeout=5)


def get(sim, path, token):
    url = sim if isinstance(sim, str) else sim.url
    return requests.get(f"{url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10)


# -- the schema generator ---------------------------------------------------------------------

def test_generated_values_satisfy_the_schema_and_depend_only_on_the_seed():
    values = [generate(PLAN_SCHEMA, random.Random(seed)) for seed in range(200)]
    for value in values:
        jsonschema.validate(value, PLAN_SCHEMA)
    assert generate(PLAN_SCHEMA, random.Random(7)) == values[7]
    assert len({repr(v) for v in values}) > 150
    assert {len(v["days"]) for v in values} == {2, 3, 4}
    assert {v["level"] for v in values} == {1, 2, 3}


# -- OpenAI ----------------------------------------------------------------------------------

def test_openai_answers_schema_valid_json_deterministically_from_the_messages(openai_sim):
    ask = [{"role": "system", "content": "You plan workouts."}, {"role": "user", "content": "Day 1 of a strength plan"}]
    first, again = chat(openai_sim, ask, PLAN_SCHEMA), chat(openai_sim, ask, PLAN_SCHEMA)
    other = chat(openai_sim, [*ask[:1], {"role": "user", "content": "Day 2 of a strength plan"}], PLAN_SCHEMA)

    assert first.status_code == 200, first.text
    body = first.json()
    assert body["object"] == "chat.completion" and body["model"] == "gpt-4o-mini"
    content = body["choices"][0]["message"]["content"]
    jsonschema.validate(json.loads(content), PLAN_SCHEMA)
    assert again.json()["choices"][0]["message"]["content"] == content
    assert other.json()["choices"][0]["message"]["content"] != content
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

    text = chat(openai_sim, [{"role": "user", "content": "Say hi"}])
    assert text.status_code == 200
    assert "Say hi" in text.json()["choices"][0]["message"]["content"]


def test_openai_wants_a_bearer_key_and_the_right_one(openai_sim):
    ask = [{"role": "user", "content": "hi"}]
    missing, wrong = chat(openai_sim, ask, key=None), chat(openai_sim, ask, key="sk-wrong-key-0123456789")
    assert missing.status_code == wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    assert "sk-wrong-key-0123456789" not in wrong.text
    assert openai_sim.stats()["by_outcome"] == {"401": 2}

    with start_openai_simulator() as open_sim:  # no --api-key: any key will do
        assert chat(open_sim, ask, key="anything").status_code == 200


def test_openai_rejects_what_strict_mode_rejects(openai_sim):
    loose = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    answer = chat(openai_sim, [{"role": "user", "content": "x"}], loose)
    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "invalid_request_error"
    assert "additionalProperties" in answer.json()["error"]["message"]
    assert chat(openai_sim, []).status_code == 400


def test_control_sequence_runs_before_the_probabilities_and_counts_outcomes(openai_sim):
    ask = [{"role": "user", "content": "x"}]
    openai_sim.control(sequence=["503", "502", "ok", "quota", "malformed"], fail={"429": 1.0}, retry_after=7)
    statuses = [chat(openai_sim, ask, PLAN_SCHEMA) for _ in range(6)]
    assert [r.status_code for r in statuses] == [503, 502, 200, 429, 200, 429]
    assert statuses[3].json()["error"]["code"] == "insufficient_quota" and "Retry-After" not in statuses[3].headers
    assert statuses[5].json()["error"]["code"] == "rate_limit_exceeded"
    assert statuses[5].headers["Retry-After"] == "7"
    with pytest.raises(ValueError):
        json.loads(statuses[4].json()["choices"][0]["message"]["content"])

    stats = openai_sim.stats()
    assert stats["requests"] == 6
    assert stats["by_outcome"] == {"503": 1, "502": 1, "ok": 1, "quota": 1, "malformed": 1, "429": 1}
    assert openai_sim.config()["sequence"] == []

    openai_sim.reset()
    assert openai_sim.stats()["requests"] == 0 and openai_sim.config()["fail"] == {}
    assert chat(openai_sim, ask).status_code == 200


@pytest.mark.parametrize("changes", [{"fail": {"418": 0.1}}, {"fail": {"503": 1.5}}, {"fail": {"503": 0.6, "429": 0.6}},
                                     {"sequence": ["ok", "nope"]}, {"latency_ms": -1}, {"colour": "red"}])
def test_control_refuses_bad_changes_and_keeps_the_config(openai_sim, changes):
    before = openai_sim.config()
    with pytest.raises(ValueError):
        openai_sim.control(**changes)
    assert openai_sim.config() == before


def test_seeded_faults_repeat_and_the_probabilities_hold():
    runs = []
    for _ in range(2):
        with start_openai_simulator(fail={"503": 0.3, "429": 0.2}, seed=42) as sim:
            runs.append([chat(sim, [{"role": "user", "content": "x"}]).status_code for _ in range(60)])
    assert runs[0] == runs[1]
    assert 5 <= runs[0].count(503) <= 35 and 2 <= runs[0].count(429) <= 25 and runs[0].count(200) >= 15


def test_a_hanging_request_blocks_nobody_else_and_ends_when_the_server_stops(openai_sim):
    openai_sim.control(sequence=["timeout"], hang_seconds=60)
    hung = {}
    thread = threading.Thread(target=lambda: hung.update(r=chat(openai_sim, [{"role": "user", "content": "x"}])))
    thread.start()
    wait_for(lambda: openai_sim.stats()["by_outcome"].get("timeout") == 1, timeout=5, message="the hang")
    assert chat(openai_sim, [{"role": "user", "content": "y"}]).status_code == 200
    assert thread.is_alive()
    openai_sim.stop()
    thread.join(10)
    assert not thread.is_alive() and hung["r"].status_code == 504


def test_fail_spec_parsing():
    assert parse_fail_spec("429=0.1, 503=0.05,timeout=0,quota=1e-2") == {
        "429": 0.1, "503": 0.05, "timeout": 0.0, "quota": 0.01}
    assert parse_fail_spec("") == {}
    for bad, named in [("429", "'429'"), ("429=x", "'429=x'"), ("418=0.1", "'418'"), ("503=2", "503=2")]:
        with pytest.raises(ValueError, match=named):
            parse_fail_spec(bad)


# -- series API ------------------------------------------------------------------------------

def test_series_login_token_records_and_404(series_sim):
    assert login(series_sim, "wrong").status_code == 401
    token = login(series_sim).json()["data"]["token"]
    assert get(series_sim, "/series/81189/extended", "not-a-token").status_code == 401

    series = get(series_sim, "/series/81189/extended", token).json()
    assert series["status"] == "success"
    data = series["data"]
    assert data["id"] == 81189 and data["name"] and data["slug"] and data["status"]["name"] in ("Ended", "Continuing")
    assert "episodes" not in data
    assert get(series_sim, "/series/81189/extended", token).json() == series

    episodes = get(series_sim, "/series/81189/extended?meta=episodes", token).json()["data"]["episodes"]
    assert len(episodes) == data["episodeCount"]
    episode = get(series_sim, f"/episodes/{episodes[-1]['id']}/extended", token).json()["data"]
    assert episode == episodes[-1] and episode["seriesId"] == 81189

    missing = get(series_sim, "/episodes/404404/extended", token)
    assert missing.status_code == 404 and missing.json()["status"] == "failure"
    assert get(series_sim, "/series/abc/extended", token).status_code == 400

    series_sim.control(missing=[81189])
    assert get(series_sim, "/series/81189/extended", token).status_code == 404
    stats = series_sim.stats()
    assert stats["logins"] == 2 and stats["requests"] == 8
    assert stats["by_outcome"] == {"401": 1, "ok": 4, "404": 2, "400": 1}


def test_series_faults_and_expired_tokens(series_sim):
    token = login(series_sim).json()["data"]["token"]
    series_sim.control(sequence=["429", "503", "malformed", "timeout"], retry_after=3, hang_seconds=0)
    limited = get(series_sim, "/series/1/extended", token)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "3"
    assert get(series_sim, "/series/1/extended", token).status_code == 503
    malformed = get(series_sim, "/series/1/extended", token)
    assert malformed.status_code == 200
    with pytest.raises(ValueError):
        malformed.json()
    assert get(series_sim, "/series/1/extended", token).status_code == 504

    series_sim.control(expire_tokens=True)
    assert get(series_sim, "/series/1/extended", token).status_code == 401
    assert login(series_sim).status_code == 200  # logins are never faulted


# -- the CLI ---------------------------------------------------------------------------------

def _wait_until_serving(proc, url):
    def up():
        assert proc.poll() is None, proc.communicate()[0]
        try:
            return requests.get(f"{url}/_control", timeout=1).ok
        except requests.ConnectionError:
            return False
    wait_for(up, timeout=20, message=f"simulator at {url}")


def test_cli_simulators_start_and_answer(processes):
    openai_port, series_port = free_port(), free_port()
    output = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    procs = [
        processes.start("simulate", "openai", "--port", str(openai_port), "--api-key", KEY, "--fail", "503=0.0,429=0",
                        "--seed", "3", "--retry-after", "4", **output),
        processes.start("simulate", "series-api", "--port", str(series_port), "--api-key", "tvdb-key",
                        "--missing", "12,13", "--latency-ms", "1", **output),
    ]
    try:
        openai_url, series_url = f"http://127.0.0.1:{openai_port}", f"http://127.0.0.1:{series_port}"
        _wait_until_serving(procs[0], openai_url)
        _wait_until_serving(procs[1], series_url)
        assert chat(f"{openai_url}/v1", [{"role": "user", "content": "x"}], PLAN_SCHEMA).status_code == 200
        config = requests.get(f"{openai_url}/_control", timeout=5).json()["config"]
        assert config["fail"] == {"503": 0.0, "429": 0.0} and config["seed"] == 3 and config["retry_after"] == 4
        token = login(series_url).json()["data"]["token"]
        assert get(series_url, "/series/12/extended", token).status_code == 404
        assert get(series_url, "/series/14/extended", token).status_code == 200

        in_use = fleet("simulate", "openai", "--port", str(openai_port), timeout=30)
        assert in_use.returncode == 1
        assert in_use.stderr.strip() == (f"fleet: port {openai_port} on 127.0.0.1 is in use (Address already in use); "
                                         "choose another with --port")
    finally:
        for proc in procs:
            processes.stop(proc, timeout=10)
    assert f"OpenAI simulator on http://127.0.0.1:{openai_port}/v1" in procs[0].stdout.read()


@pytest.mark.parametrize("spec, named", [("429=0.1,teapot=0.2", "'teapot'"), ("503=lots", "'503=lots'"),
                                         ("503=0.7,500=0.7", "more than 1")])
def test_cli_rejects_a_bad_fail_spec_with_exit_code_2(spec, named):
    result = fleet("simulate", "series-api", "--port", str(free_port()), "--fail", spec, timeout=30)
    assert result.returncode == 2
    assert "--fail" in result.stderr and named in result.stderr

