"""Every failure of the real clients maps to its error code through `core.errors.classify`."""
from __future__ import annotations

import dataclasses

import pytest

from core.clients import OpenAIClient, SeriesClient
from core.errors import CODES, classify
from tests.test_clients import (  # noqa: F401  (fixtures)
    SCHEMA,
    closed_port_url,
    openai_settings,
    openai_sim,
    series_settings,
    series_sim,
    shared_state,
)


def failure_of(call):
    with pytest.raises(Exception) as failed:
        call()
    return classify(failed.value)


@pytest.mark.parametrize("fault, code, retry_after", [
    ("429", "ERR_RATE_LIMIT", 7.0),
    ("quota", "ERR_QUOTA_EXCEEDED", None),
    ("500", "ERR_API_UNAVAILABLE", None),
    ("502", "ERR_API_UNAVAILABLE", None),
    ("503", "ERR_API_UNAVAILABLE", None),
    ("timeout", "ERR_API_TIMEOUT", None),
    ("malformed", "ERR_INVALID_RESPONSE", None),
    ("401", "ERR_AUTH", None),
])
def test_openai_faults(openai_settings, openai_sim, fault, code, retry_after):
    openai_sim.control(sequence=[fault] * (3 if fault == "malformed" else 1), retry_after=7, hang_seconds=30)
    client = OpenAIClient(openai_settings, timeout=0.5)
    found = failure_of(lambda: client.generate_json("s", "p", SCHEMA, "x", max_completion_tokens=500))
    assert (found.code.code, found.retry_after) == (code, retry_after), found.message
    assert found.retryable == CODES[code].retryable
    assert openai_sim.stats()["by_outcome"] == {fault: 3 if fault == "malformed" else 1}  # unusable: asked thrice


def test_openai_wrong_key_bad_schema_answer_off_schema_and_closed_port(openai_settings, openai_sim):
    wrong = dataclasses.replace(openai_settings, openai_api_key="sk-not-the-right-key-000000")
    assert failure_of(lambda: OpenAIClient(wrong).generate_json("s", "p", SCHEMA, "x", max_completion_tokens=500)).code.code == "ERR_AUTH"

    client = OpenAIClient(openai_settings)
    not_strict = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    assert failure_of(lambda: client.generate_json("s", "p", not_strict, "x", max_completion_tokens=500)).code.code == "ERR_BAD_REQUEST"

    # The simulator ignores `pattern`, so its answer breaks this schema: caught by our validation.
    patterned = {"type": "object", "additionalProperties": False, "required": ["code"],
                 "properties": {"code": {"type": "string", "pattern": "^[0-9]{4}$"}}}
    found = failure_of(lambda: client.generate_json("s", "p", patterned, "coded", max_completion_tokens=500))
    assert found.code.code == "ERR_INVALID_RESPONSE" and "'coded' at code" in found.message

    closed = dataclasses.replace(openai_settings, openai_base_url=closed_port_url("/v1"))
    assert failure_of(lambda: OpenAIClient(closed).generate_json("s", "p", SCHEMA, "x", max_completion_tokens=500)).code.code == "ERR_CONNECTION"
    assert openai_sim.stats()["by_outcome"] == {"401": 1, "400": 1, "ok": 3}  # an unusable answer is asked for thrice


@pytest.mark.parametrize("fault, code, retry_after", [
    ("429", "ERR_RATE_LIMIT", 7.0),
    ("500", "ERR_API_UNAVAILABLE", None),
    ("503", "ERR_API_UNAVAILABLE", None),
    ("timeout", "ERR_API_TIMEOUT", None),
    ("malformed", "ERR_INVALID_RESPONSE", None),
])
def test_series_faults(series_settings, series_sim, fault, code, retry_after):
    series_sim.control(sequence=[fault], retry_after=7, hang_seconds=30)
    client = SeriesClient(series_settings, timeout=0.5)
    found = failure_of(lambda: client.get_episode(101))
    assert (found.code.code, found.retry_after) == (code, retry_after), found.message
    assert series_sim.stats()["by_outcome"] == {fault: 1}


def test_series_wrong_key_missing_id_bad_id_and_closed_port(series_settings, series_sim):
    wrong = dataclasses.replace(series_settings, series_api_key="not-the-key")
    assert failure_of(lambda: SeriesClient(wrong).get_series(1)).code.code == "ERR_AUTH"

    client = SeriesClient(series_settings)
    assert failure_of(lambda: client.get_series(404)).code.code == "ERR_NOT_FOUND"
    assert failure_of(lambda: client.get_episode("s01e01")).code.code == "ERR_BAD_REQUEST"

    closed = dataclasses.replace(series_settings, series_api_url=closed_port_url())
    assert failure_of(lambda: SeriesClient(closed, connect_retries=0).get_series(1)).code.code == "ERR_CONNECTION"
    assert series_sim.stats()["by_outcome"] == {"404": 1, "400": 1}
