"""OpenAI chat completions with Structured Outputs, validated, priced, behind the breaker."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import jsonschema

# openai builds its response models on first use by default; that build is not thread-safe, and
# worker threads parsing their first responses at once failed now and then with PydanticUserError
# "BaseModel cannot be instantiated directly" (openai/openai-python#3079). Built at import instead.
os.environ.setdefault("DEFER_PYDANTIC_BUILD", "false")
import openai  # noqa: E402

from core.breakers import breaker
from core.errors import JobError
from core.settings import Settings

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


class OpenAIClient:
    def __init__(self, settings: Settings, *, timeout: float = 60.0, model: str | None = None):
        if not settings.openai_api_key:
            raise JobError("ERR_AUTH", "OPENAI_API_KEY is not set")
        self.model = model or settings.openai_model
        # Fleet retries whole jobs with its own backoff; SDK retries would multiply them.
        self._client = openai.OpenAI(api_key=settings.openai_api_key, base_url=settings.openai_base_url,
                                     timeout=timeout, max_retries=0)

    def generate_json(self, system: str, prompt: str, schema: dict, schema_name: str) -> Generation:
        """One chat completion whose answer must be JSON valid against `schema` (strict mode)."""
        completion = breaker("openai").call(
            self._client.chat.completions.create,
            model=self.model,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": prompt}],
            response_format={"type": "json_schema",
                             "json_schema": {"name": schema_name, "strict": True, "schema": schema}},
        )
        data = _validated_json(completion, schema, schema_name)
        usage = completion.usage
        prompt_tokens = usage.prompt_tokens if usage else 0
        completion_tokens = usage.completion_tokens if usage else 0
        return Generation(data=data, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                          cost_usd=cost_usd(completion.model, prompt_tokens, completion_tokens),
                          model=completion.model)


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
