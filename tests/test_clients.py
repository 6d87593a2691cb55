"""The two API clients against the simulators: real `openai`, real `requests`, real Redis."""
from __future__ import annotations

import dataclasses
import logging
import os
import subprocess

import jsonschema
import pybreaker
import pytest
import requests

from core.breakers import breaker, forget_breakers
from core.clients import Generation, OpenAIClient, SeriesClient, cost_usd
from core.errors import JobError, classify
from core.net import free_port
from core.openai_budget import forget_openai_budget
from core.settings import get_settings, load_settings
from core.simulators import start_openai_simulator, start_series_simulator
from core.state import state_redis
from tests.helpers import wait_for

OPENAI_KEY = "sk-test-clients-5f1e2d3c4b5a69788796"
SERIES_KEY = "tvdb-test-key-0a1b2c3d4e5f"
SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "exercises"],
    "properties": {
        "name": {"type": "string"},
        "exercises": {
            "type": "array", "minItems": 1, "maxItems": 5,
            "items": {"type": "object", "additionalProperties": False, "required": ["exercise", "sets"],
                      "properties": {"exercise": {"type": "string"},
                                     "sets": {"type": "integer", "minimum": 1, "maximum": 6}}},
        },
    },
}


# Fixtures shared with test_error_codes.py.

@pytest.fixture(autouse=True)
def shared_state():
    """Breakers, series tokens and the OpenAI budget start from nothing (they live in the test Redis)."""
    redis = state_redis()

    def clear():
        for pattern in ("fleet:breaker:*", "fleet:series_api:*", "fleet:budget:openai:*"):
            for key in redis.scan_iter(pattern):
                redis.delete(key)
        forget_breakers()
        forget_openai_budget()

    clear()
    yield redis
    clear()


@pytest.fixture
def openai_sim():
    sim = start_openai_simulator(api_key=OPENAI_KEY)
    yield sim
    sim.stop()


@pytest.fixture
def series_sim():
    sim = start_series_simulator(api_key=SERIES_KEY, missing=[404])
    yield sim
    sim.stop()


@pytest.fixture
def openai_settings(openai_sim, db):
    return dataclasses.replace(get_settings(), openai_base_url=openai_sim.url, openai_api_key=OPENAI_KEY)


@pytest.fixture
def series_settings(series_sim):
    return dataclasses.replace(get_settings(), series_api_url=series_sim.url, series_api_key=SERIES_KEY)


def closed_port_url(path: str = "") -> str:
    return f"http://127.0.0.1:{free_port()}{path}"


# -- OpenAI ----------------------------------------------------------------------------------

def test_generate_json_returns_validated_data_tokens_and_cost(openai_settings):
    client = OpenAIClient(openai_settings)
    result = client.generate_json("You plan workouts.", "Day 1: legs", SCHEMA, "workout_day", max_completion_tokens=500)

    assert isinstance(result, Generation)
    jsonschema.validate(result.data, SCHEMA)
    assert result.model == "gpt-4o-mini"
    assert result.prompt_tokens > 0 and result.completion_tokens > 0
    assert result.cost_usd == pytest.approx((result.prompt_tokens * 0.15 + result.completion_tokens * 0.60) / 1e6)
    assert client.generate_json("You plan workouts.", "Day 1: legs", SCHEMA, "workout_day", max_completion_tokens=500) == result
    assert client.generate_json("You plan workouts.", "Day 2: arms", SCHEMA, "workout_day", max_completion_tokens=500).data != result.data


def test_cost_table():
    assert cost_usd("gpt-4o-mini-2024-07-18", 1_000_000, 1_000_000) == pytest.approx(0.75)
    assert cost_usd("gpt-4o", 1_000_000, 0) == pytest.approx(2.50)
    assert cost_usd("gpt-4.1-mini", 0, 1_000_000) == pytest.approx(1.60)
    assert cost_usd("some-local-model", 1_000_000, 1_000_000) == 0.0


def test_the_sdk_does_not_retry(openai_settings, openai_sim):
    openai_sim.control(sequence=["503", "ok"])
    with pytest.raises(Exception) as failed:
        OpenAIClient(openai_settings).generate_json("s", "p", SCHEMA, "x", max_completion_tokens=500)
    assert classify(failed.value).code.code == "ERR_API_UNAVAILABLE"
    assert openai_sim.stats()["requests"] == 1


# -- series API ------------------------------------------------------------------------------

def test_series_and_episode_data(series_settings):
    client = SeriesClient(series_settings)
    series = client.get_series(81189)
    assert series["id"] == 81189 and series["name"] and "episodes" not in series
    episodes = client.get_series(81189, episodes=True)["episodes"]
    assert len(episodes) == series["episodeCount"]
    assert client.get_episode(episodes[0]["id"]) == episodes[0]


def test_one_token_is_shared_by_all_clients_and_refreshed_once_when_it_expires(series_settings, series_sim,
                                                                                shared_state):
    first, second = SeriesClient(series_settings), SeriesClient(series_settings)
    first.get_series(1)
    second.get_episode(101)
    second.get_series(2)
    assert series_sim.stats()["logins"] == 1
    (key,) = list(shared_state.scan_iter("fleet:series_api:token:*"))
    assert 0 < shared_state.ttl(key) <= 24 * 3600

    series_sim.control(expire_tokens=True)
    assert first.get_series(3)["id"] == 3
    assert second.get_series(4)["id"] == 4
    stats = series_sim.stats()
    assert stats["logins"] == 2 and stats["by_outcome"] == {"ok": 5, "401": 1}


def test_a_token_refused_twice_is_an_auth_error(series_settings, series_sim):
    client = SeriesClient(series_settings)
    client.get_series(1)
    series_sim.control(sequence=["401", "401", "ok"])
    with pytest.raises(Exception) as failed:
        client.get_series(1)
    assert classify(failed.value).code.code == "ERR_AUTH"
    stats = series_sim.stats()
    assert stats["logins"] == 2 and stats["requests"] == 3  # one refresh, not a loop


def test_connection_errors_are_retried_three_times_statuses_and_timeouts_never(series_settings, series_sim, caplog):
    caplog.set_level(logging.WARNING, logger="urllib3")
    closed = dataclasses.replace(series_settings, series_api_url=closed_port_url())
    with pytest.raises(Exception) as failed:
        SeriesClient(closed).get_series(1)
    assert classify(failed.value).code.code == "ERR_CONNECTION"
    assert sum("Retrying" in r.getMessage() for r in caplog.records if r.name.startswith("urllib3")) == 3

    client = SeriesClient(series_settings, timeout=0.5)
    client.get_series(1)
    series_sim.control(sequence=["503", "timeout", "429"], hang_seconds=30)
    for expected in ("ERR_API_UNAVAILABLE", "ERR_API_TIMEOUT", "ERR_RATE_LIMIT"):
        with pytest.raises(Exception) as failed:
            client.get_series(1)
        assert classify(failed.value).code.code == expected
    assert series_sim.stats()["requests"] == 4


# -- the shared breaker ----------------------------------------------------------------------

def test_openai_breaker_opens_after_the_threshold_and_then_spares_the_service(openai_settings, openai_sim):
    failures = get_settings().circuit_failures
    client = OpenAIClient(openai_settings)
    openai_sim.control(fail={"503": 1.0})
    codes = []
    for _ in range(failures):
        try:
            client.generate_json("s", "p", SCHEMA, "x", max_completion_tokens=500)
        except Exception as exc:  # noqa: BLE001 - collecting what each call raised
            codes.append(classify(exc).code.code)
    # pybreaker reports the call that trips it as CircuitBreakerError already.
    assert codes == ["ERR_API_UNAVAILABLE"] * (failures - 1) + ["ERR_CIRCUIT_OPEN"]
    assert breaker("openai").current_state == pybreaker.STATE_OPEN

    sent = openai_sim.stats()["requests"]
    forget_breakers()  # a fresh process sees the open state in Redis
    with pytest.raises(pybreaker.CircuitBreakerError) as failed:
        OpenAIClient(openai_settings).generate_json("s", "p", SCHEMA, "x", max_completion_tokens=500)
    assert classify(failed.value).code.code == "ERR_CIRCUIT_OPEN"
    assert openai_sim.stats()["requests"] == sent == failures


def test_series_breaker_ignores_answers_that_say_nothing_about_health(series_settings, series_sim):
    failures = get_settings().circuit_failures
    client = SeriesClient(series_settings, timeout=0.5)
    series_sim.control(missing=[7], sequence=["429"] * failures)
    for _ in range(failures):
        with pytest.raises(Exception) as failed:
            client.get_series(1)
        assert classify(failed.value).code.code == "ERR_RATE_LIMIT"
    for _ in range(failures):
        with pytest.raises(Exception) as failed:
            client.get_series(7)
        assert classify(failed.value).code.code == "ERR_NOT_FOUND"
    assert breaker("series_api").current_state == pybreaker.STATE_CLOSED

    series_sim.control(sequence=["503"] * (failures - 1) + ["timeout"], hang_seconds=30)
    for _ in range(failures):
        with pytest.raises(Exception):  # noqa: B017 - a 503 and a timeout, whatever their classes
            client.get_series(1)
    sent = series_sim.stats()["requests"]
    with pytest.raises(pybreaker.CircuitBreakerError):
        client.get_series(1)
    assert series_sim.stats()["requests"] == sent


# -- secrets ---------------------------------------------------------------------------------

def test_keys_and_tokens_never_reach_logs_or_errors(openai_settings, openai_sim, series_settings, series_sim,
                                                     shared_state, caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("openai", "httpx2", "httpcore2", "urllib3", "fleet"):
        caplog.set_level(logging.DEBUG, logger=name)
    messages = []

    def failing(call):
        with pytest.raises(Exception) as failed:
            call()
        messages.extend([str(failed.value), repr(failed.value), classify(failed.value).message])

    OpenAIClient(openai_settings).generate_json("s", "p", SCHEMA, "x", max_completion_tokens=500)
    wrong_openai = dataclasses.replace(openai_settings, openai_api_key=OPENAI_KEY[::-1])
    failing(lambda: OpenAIClient(wrong_openai).generate_json("s", "p", SCHEMA, "x", max_completion_tokens=500))
    openai_sim.control(sequence=["429"])
    failing(lambda: OpenAIClient(openai_settings).generate_json("s", "p", SCHEMA, "x", max_completion_tokens=500))

    client = SeriesClient(series_settings)
    tokens = set()

    def remember_token():
        (key,) = list(shared_state.scan_iter("fleet:series_api:token:*"))
        tokens.add(shared_state.get(key).decode())

    client.get_series(1)
    remember_token()
    series_sim.control(expire_tokens=True)
    client.get_series(2)
    remember_token()
    series_sim.control(sequence=["401", "401"])
    failing(lambda: client.get_series(3))
    remember_token()
    wrong_series = dataclasses.replace(series_settings, series_api_key=SERIES_KEY[::-1])
    failing(lambda: SeriesClient(wrong_series).get_series(1))

    assert caplog.records and len(messages) == 12 and len(tokens) == 3
    logged = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    for secret in (OPENAI_KEY, OPENAI_KEY[::-1], SERIES_KEY, SERIES_KEY[::-1], *tokens):
        assert secret not in logged
        assert not any(secret in m for m in messages)


def test_missing_keys_are_auth_errors():
    settings = get_settings()
    for make, variable in ((OpenAIClient, "OPENAI_API_KEY"), (SeriesClient, "SERIES_API_KEY")):
        with pytest.raises(JobError) as failed:
            make(dataclasses.replace(settings, openai_api_key=None, series_api_key=None))
        assert failed.value.code == "ERR_AUTH" and variable in str(failed.value)


# -- the demo --------------------------------------------------------------------------------

def test_demo_simulators_serve_what_the_demo_environment_points_at(processes):
    from fleet.cli.demo import demo_programs

    programs, env = demo_programs(get_settings())
    simulators = [p for p in programs if p.args[0] == "simulate"]
    assert [p.priority for p in simulators] == [20, 20]
    procs = [processes.start(*p.args, stdout=subprocess.DEVNULL) for p in simulators]
    try:
        settings = load_settings({**os.environ, **env})

        def answers(call):
            try:
                return call()
            except Exception:  # noqa: BLE001 - not up yet, or one of the demo's injected faults
                return None

        for base in (env["OPENAI_BASE_URL"].removesuffix("/v1"), env["SERIES_API_URL"]):
            wait_for(lambda base=base: answers(lambda: requests.get(f"{base}/_control", timeout=1).ok), timeout=30,
                     message=f"a demo simulator at {base}")

        generation = wait_for(lambda: answers(lambda: OpenAIClient(settings).generate_json("s", "p", SCHEMA, "x", max_completion_tokens=500)),
                              timeout=30, message="the demo OpenAI simulator")
        jsonschema.validate(generation.data, SCHEMA)
        series = wait_for(lambda: answers(lambda: SeriesClient(settings).get_series(81189)),
                          timeout=30, message="the demo series simulator")
        assert series["id"] == 81189
    finally:
        for proc in procs:
            processes.stop(proc, timeout=10)
