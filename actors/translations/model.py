"""Asking the model: segments packed into requests, and answers checked for their placeholders."""
from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator

from actors.batches import Ask, ItemRun
from actors.translations.languages import language_name
from actors.translations.markup import added_markup
from core.errors import JobError

MAX_REQUEST_CHARS = 12_000  # text a request: ~3,000 tokens in, as many out, well within the model's limits
MAX_REQUEST_SEGMENTS = 100

# What must come back unchanged: {name} {{ name }} {0}, printf's %s %d %(name)s %1$s %.2f,
# Laravel's :count, and HTML tags.
PLACEHOLDER = re.compile(r"""
      \{\{?\s*[\w.\-]*\s*\}?\}
    | %\d+\$[sd]
    | %(?:\(\w+\))?[-+\ #0]*\d*(?:\.\d+)?[sdifuxXeEgGc]
    | (?<![\w:/]):[A-Za-z_]\w*
    | </?[A-Za-z][^<>]*>
""", re.X)

SYSTEM_PROMPT = (
    "You are a professional translator. Translate every segment of the user's JSON from "
    "`from_language` into `to_language`. Keep placeholders such as {name}, {{ name }}, %s, "
    "%(name)s and :count, HTML tags, Markdown syntax, URLs and code exactly as they are. Answer "
    "with JSON: `segments`, the translations in the same order, one for each segment given."
)
SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["segments"],
    "properties": {"segments": {"type": "array", "items": {"type": "string"}}},
}


def requests_for(segments: list[str]) -> Iterator[list[str]]:
    """Consecutive segments packed into requests within the model's limits."""
    batch: list[str] = []
    size = 0
    for segment in segments:
        if batch and (size + len(segment) > MAX_REQUEST_CHARS or len(batch) >= MAX_REQUEST_SEGMENTS):
            yield batch
            batch, size = [], 0
        batch.append(segment)
        size += len(segment)
    if batch:
        yield batch


def placeholder_problem(source: str, translated: str) -> str | None:
    """What a translation changed of the source's placeholders (lost or added), or added of
    markup the source did not have; None when it is safe to write."""
    expected, got = Counter(PLACEHOLDER.findall(source)), Counter(PLACEHOLDER.findall(translated))
    missing, extra = sorted((expected - got).elements()), sorted((got - expected).elements())
    parts = ([f"lost {', '.join(missing)}"] if missing else []) + ([f"added {', '.join(extra)}"] if extra else [])
    added = added_markup(source, translated)
    if added:
        parts.append(f"added markup the source did not have: {', '.join(added)}")
    return "; ".join(parts) or None


def completion_tokens_for(part: list[str]) -> int:
    """Room for the answer: the text again, somewhat longer (other languages, other scripts), plus
    the JSON around each segment; OpenAI's rate limit counts it before the call."""
    return min(16_000, sum(len(s) for s in part) // 2 + 16 * len(part) + 200)


def check_answer(part: list[str], got: list[str], before: int) -> None:
    """ERR_INVALID_RESPONSE unless every segment came back, placeholders intact (the call is then
    asked again)."""
    if len(got) != len(part):
        raise JobError("ERR_INVALID_RESPONSE", f"OpenAI answered {len(got)} segments for {len(part)}")
    for n, (asked, answer_text) in enumerate(zip(part, got), start=before + 1):
        problem = placeholder_problem(asked, answer_text)
        if problem:
            raise JobError("ERR_INVALID_RESPONSE", f"segment {n}: placeholders changed ({problem})")


def asks_for(segments: list[str], source: str, target: str, fmt: str) -> list[Ask]:
    """The requests that translate `segments`, each with the check of its answer: the same on
    the live and the economy lane."""
    asks: list[Ask] = []
    before = 0
    for part in requests_for(segments):
        prompt = json.dumps({"from": source, "from_language": language_name(source), "to": target,
                             "to_language": language_name(target), "format": fmt, "segments": part}, ensure_ascii=False)
        asks.append(Ask(SYSTEM_PROMPT, prompt, SCHEMA, "translation", completion_tokens_for(part),
                        check=lambda data, part=part, before=before: check_answer(part, data["segments"], before)))
        before += len(part)
    return asks


def translate_segments(client, segments: list[str], source: str, target: str, fmt: str, run: ItemRun) -> tuple[list[str], int]:
    """The translations of `segments`, and the requests it took; each response's cost is charged to `run`."""
    translated: list[str] = []
    requests = 0
    for ask in asks_for(segments, source, target, fmt):
        try:
            answer = client.generate_json(ask.system, ask.prompt, ask.schema, ask.schema_name,
                                          max_completion_tokens=ask.max_completion_tokens, check=ask.check)
        except JobError as exc:
            run.charge(getattr(exc, "cost_usd", 0.0), getattr(exc, "tokens", 0))  # unusable answers are paid for too
            raise
        requests += 1
        run.charge(answer.cost_usd, answer.prompt_tokens + answer.completion_tokens)
        translated += answer.data["segments"]
    return translated, requests
