"""OpenAI chat completions with Structured Outputs: within the fleet's budget and spend cap,
validated (an unusable answer is asked for again), priced, behind the breaker."""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import jsonschema

# openai builds its response models on first use by default; that build is not thread-safe, and
# worker threads parsing their first responses at once failed now and then with PydanticUserError
# "BaseModel cannot be instantiated directly" (openai/openai-python#3079). Built at import instead.
os.environ.setdefault("DEFER_PYDANTIC_BUILD", "false")
import openai  # noqa: E402

from core import fencing, spend
from core.breakers import breaker
from core.errors import JobError, classify, retry_after_seconds
from core.openai_budget import openai_budget
from core.settings import Settings

log = logging.getLogger("fleet.openai")

# USD per 1M tokens (input, output), from OpenAI's price list. A model not listed here
# (or a provider behind OPENAI_BASE_URL with other prices) is costed at 0, not guessed.
PRICES_PER_MILLION: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5": (1.25, 10.00),
}


def cost_usd(model: str, prompt_tokens: int, completion_tokens: int) -> float:
    """Price of a call; dated snapshots ("gpt-4o-mini-2024-07-18") cost what their family costs."""
    family = max((m for m in PRICES_PER_MILLION if model == m or model.startswith(m + "-")), key=len, default=None)
    if family is None:
        return 0.0
    per_input, per_output = PRICES_PER_MILLION[family]
    return (prompt_tokens * per_input + completion_tokens * per_output) / 1_000_000


@dataclass(frozen=True)
class Generation:
    data: dict
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    model: str


INVALID_RETRIES = 2  # an unusable answer (not JSON, off-schema, cut off, empty) is asked for again this often
CHARS_PER_TOKEN = 4  # OpenAI's rule of thumb for English; the real count is settled from `usage`


def estimate_tokens(*texts: str) -> int:
    """Prompt tokens a call is expected to cost (its messages and schema), rounded up."""
    return sum(len(t) for t in texts) // CHARS_PER_TOKEN + 8 * len(texts)


class OpenAIClient:
    def __init__(self, settings: Settings, *, timeout: float | None = None, model: str | None = None):
        if not settings.openai_api_key:
            raise JobError("ERR_AUTH", "OPENAI_API_KEY is not set")
        self.model = model or settings.openai_model
        self.budget = openai_budget()
        # Fleet retries whole jobs with its own backoff; SDK retries would multiply them.
        self._client = openai.OpenAI(api_key=settings.openai_api_key, base_url=settings.openai_base_url,
                                     timeout=timeout or settings.openai_timeout, max_retries=0)

    def generate_json(self, system: str, prompt: str, schema: dict, schema_name: str, *,
                      max_completion_tokens: int, check: Callable[[dict], None] | None = None) -> Generation:
        """One chat completion whose answer must be JSON valid against `schema` (strict mode) and
        pass `check` (which raises ERR_INVALID_RESPONSE); an unusable answer is asked for again up
        to INVALID_RETRIES times, each call within the fleet's budget and the spend cap."""
        cost = prompt_tokens = completion_tokens = 0
        for attempt in range(INVALID_RETRIES + 1):
            completion = self._call(system, prompt, schema, schema_name, max_completion_tokens)
            usage = completion.usage
            prompt_tokens += usage.prompt_tokens if usage else 0
            completion_tokens += usage.completion_tokens if usage else 0
            cost += cost_usd(completion.model, usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0)
            try:
                data = _validated_json(completion, schema, schema_name)
                if check is not None:
                    check(data)
            except JobError as exc:
                if exc.code != "ERR_INVALID_RESPONSE" or attempt == INVALID_RETRIES:
                    if exc.code == "ERR_INVALID_RESPONSE":
                        exc = JobError(exc.code, f"{exc} ({attempt + 1} answers, none usable)")
                    exc.cost_usd, exc.tokens = cost, prompt_tokens + completion_tokens  # paid for all the same
                    raise exc from None
                log.info("unusable OpenAI answer; asking again", extra={"error": str(exc)[:300], "attempt": attempt + 1})
                continue
            return Generation(data=data, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                              cost_usd=cost, model=completion.model)
        raise AssertionError("unreachable")

    def _call(self, system: str, prompt: str, schema: dict, schema_name: str, max_completion_tokens: int):
        """One request: the spend cap checked, its place in the budget taken, the answer's usage
        settled, its headers observed, its cost recorded. A job's copy whose message was
        redelivered meanwhile (fencing) stops here instead of paying again."""
        fencing.check()
        spend.check_cap()
        reserved = self.budget.reserve(estimate_tokens(system, prompt, json.dumps(schema)) + max_completion_tokens)
        try:
            raw = breaker("openai").call(
                self._client.chat.completions.with_raw_response.create,
                model=self.model,
                messages=[{"role": "system", "content": system}, {"role": "user", "content": prompt}],
                response_format={"type": "json_schema",
                                 "json_schema": {"name": schema_name, "strict": True, "schema": schema}},
                max_completion_tokens=max_completion_tokens,
            )
        except openai.RateLimitError as exc:
            self.budget.call_done()
            self.budget.settle(reserved, 0)  # a refused call costs no tokens
            self.budget.observe(exc.response.headers, answered=False)
            error = classify(exc)
            if error.code.code != "ERR_RATE_LIMIT":
                raise  # ERR_QUOTA_EXCEEDED: billing, permanent
            raise self.budget.rate_limited(retry_after(exc.response.headers), error.message) from None
        except BaseException:
            self.budget.call_done()  # any other failure (a timeout) may have been counted: its tokens stay spent
            raise
        completion = raw.parse()
        usage = completion.usage
        prompt_tokens = usage.prompt_tokens if usage else 0
        completion_tokens = usage.completion_tokens if usage else 0
        self.budget.settle(reserved, prompt_tokens + completion_tokens if usage else reserved)
        self.budget.observe(raw.headers)  # after the settling: the provider's view of what is left wins
        self.budget.call_done()
        spend.record(cost_usd(completion.model, prompt_tokens, completion_tokens), prompt_tokens, completion_tokens)
        return completion


def retry_after(headers) -> float | None:
    """The wait a 429 asks for: `retry-after-ms` (OpenAI's precise one) or `Retry-After`."""
    value = headers.get("retry-after-ms") if headers is not None else None
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    return retry_after_seconds(headers)


def _validated_json(completion, schema: dict, schema_name: str) -> dict:
    """The answer's JSON, or JobError ERR_INVALID_RESPONSE if it is missing, not JSON or off-schema."""
    choice = completion.choices[0] if completion.choices else None
    if choice is None or choice.finish_reason != "stop" or not choice.message.content:
        refusal = choice.message.refusal if choice else None
        reason = f"refused: {refusal}" if refusal else f"finish_reason={choice and choice.finish_reason}, no content"
        raise JobError("ERR_INVALID_RESPONSE", f"OpenAI gave no usable answer ({reason})")
    try:
        data = json.loads(choice.message.content)
    except json.JSONDecodeError as exc:
        raise JobError("ERR_INVALID_RESPONSE", f"OpenAI answered invalid JSON: {exc}") from None
    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise JobError("ERR_INVALID_RESPONSE",
                       f"OpenAI answer violates schema {schema_name!r} at {where}: {error.message[:300]}")
    return data
