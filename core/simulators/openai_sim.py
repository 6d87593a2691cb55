"""An OpenAI-compatible `POST /v1/chat/completions` that answers Structured Outputs.

The answer is generated from the request's JSON Schema, deterministically from the
messages, so a test can predict it and a demo needs no key. A translation request (schema
named "translation", the user message a JSON object with "to" and "segments") is answered by
marking each segment with the target language, `[nl] text`, placeholders kept; each
segment translated is counted by its SHA-1 (`GET /_control` → `translations`), so a test can
tell that nothing was translated twice.

With `rpm` / `tpm` it enforces rate limits as the provider does: a bucket of requests and one of
tokens per API key, each as large as its limit and refilled over `window` seconds (a minute;
tests shorten it). A call needs one request and its prompt + `max_completion_tokens` tokens in
the buckets, and is charged its real usage; otherwise 429 with the real wait in `Retry-After`
and `retry-after-ms`. Every answer carries `x-ratelimit-limit|remaining|reset-requests|tokens`.
`GET /_control` → `limits` counts the requests that arrived in the busiest window.
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import re
import threading
import time
from collections import Counter

from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from core.simulators.faults import FaultState
from core.simulators.openai_batches import RULES as BATCH_RULES
from core.simulators.openai_batches import BatchAPI
from core.simulators.rate_limits import DEFAULT_COMPLETION_TOKENS, RateLimits, duration
from core.simulators.server import SimulatorApp, SimulatorServer, json_response

WORDS = ("alpha bravo calm deep easy firm glide high iron jump keen light move north open push quick rest "
         "steady tempo upper vital warm yield zone").split()

ERROR_TYPES = {  # status or fault → (type, code) as OpenAI sends them
    "429": ("requests", "rate_limit_exceeded"),
    "quota": ("insufficient_quota", "insufficient_quota"),
    "timeout": ("timeout", None),
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "unknown_url"),
}


TRANSLATION_SCHEMA = "translation"
TRANSLATION_MODES = ("mark", "drop_placeholders")  # the second answers like a careless model
# `translation_append` (a control setting): text added to every translated segment, as a model
# tricked by a hostile file might answer (`<img src=x onerror=…`, `{{ … }}`, a javascript: link)
BRACE_PLACEHOLDER = re.compile(r"\{[^{}\s]*\}")


def segment_digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


class InvalidRequest(ValueError):
    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


# -- answers generated from a JSON Schema ----------------------------------------------------

def generate(schema: dict, rng: random.Random, root: dict | None = None, depth: int = 0):
    """A value that satisfies `schema` (the subset Structured Outputs uses), drawn from `rng`."""
    root = root if root is not None else schema
    if "$ref" in schema:
        target = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return generate(target, rng, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return rng.choice(schema["enum"])
    for combinator in ("anyOf", "oneOf", "allOf"):
        if schema.get(combinator):
            return generate(schema[combinator][0], rng, root, depth + 1)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        return {name: generate(sub, rng, root, depth + 1) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        low = schema.get("minItems", 0 if depth > 6 else 1)
        high = max(low, schema.get("maxItems", max(low, 3)) if depth <= 6 else low)
        return [generate(schema.get("items", {}), rng, root, depth + 1) for _ in range(rng.randint(low, high))]
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1)
        high = schema.get("maximum", schema.get("exclusiveMaximum", low + 101) - 1)
        if kind == "integer":
            return rng.randint(int(-(-low // 1)), int(high // 1))
        return round(rng.uniform(low, high), 2) if high > low else low
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return _text(schema, rng)


def _text(schema: dict, rng: random.Random) -> str:
    if schema.get("format") == "date":
        return f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))).capitalize()
    text = text.ljust(schema.get("minLength", 0), ".")
    return text[: schema.get("maxLength", len(text))]


def strict_problem(schema: dict, path: str = "schema") -> str | None:
    """What OpenAI's strict mode would reject in `schema`, or None."""
    if not isinstance(schema, dict):
        return f"{path} is not a JSON object"
    if schema.get("type") == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        if schema.get("additionalProperties") is not False:
            return f"In context={path}, 'additionalProperties' is required to be supplied and to be false"
        missing = sorted(set(properties) - set(schema.get("required", [])))
        if missing:
            return f"In context={path}, 'required' is required to include every property; missing {missing}"
        children = [(f"{path}.properties.{k}", v) for k, v in properties.items()]
    else:
        children = []
    if isinstance(schema.get("items"), dict):
        children.append((f"{path}.items", schema["items"]))
    for key in ("anyOf", "$defs", "definitions"):
        branches = schema.get(key) or []
        named = branches.items() if isinstance(branches, dict) else enumerate(branches)
        children += [(f"{path}.{key}.{k}", v) for k, v in named]
    for child_path, child in children:
        problem = strict_problem(child, child_path)
        if problem:
            return problem
    return None


# -- the request and its answer ---------------------------------------------------------------

def _text_of(content) -> str:
    if isinstance(content, list):  # content parts
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


def parse_request(body) -> tuple[str, list[dict], dict | None]:
    """(model, messages, schema or None); InvalidRequest as OpenAI would answer 400."""
    if not isinstance(body, dict):
        raise InvalidRequest("We could not parse the JSON body of your request.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("you must provide a model parameter", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise InvalidRequest("'messages' must be a non-empty array of messages with a role", "messages")
    response_format = body.get("response_format") or {"type": "text"}
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return model, messages, None
    if kind == "json_object":
        return model, messages, {"type": "object", "properties": {"answer": {"type": "string"}}}
    if kind != "json_schema":
        raise InvalidRequest(f"Invalid value for response_format.type: {kind!r}", "response_format.type")
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict) or not spec.get("name") or not isinstance(spec.get("schema"), dict):
        raise InvalidRequest("response_format.json_schema needs a 'name' and a 'schema'", "response_format.json_schema")
    schema = spec["schema"]
    if spec.get("strict"):
        if schema.get("type") != "object":
            raise InvalidRequest(f"Invalid schema for response_format '{spec['name']}': the root must be an object",
                                 "response_format")
        problem = strict_problem(schema)
        if problem:
            raise InvalidRequest(f"Invalid schema for response_format '{spec['name']}': {problem}.", "response_format")
    return model, messages, schema


def translation_request(body: dict, messages: list[dict]) -> tuple[str, list[str]] | None:
    """(target language, segments) when the request asks for a translation, else None."""
    spec = (body.get("response_format") or {}).get("json_schema") or {}
    if spec.get("name") != TRANSLATION_SCHEMA:
        return None
    asked = next((_text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    try:
        request = json.loads(asked)
    except ValueError:
        raise InvalidRequest("a translation request's user message must be a JSON object", "messages") from None
    segments = request.get("segments") if isinstance(request, dict) else None
    if not isinstance(segments, list) or not all(isinstance(s, str) for s in segments):
        raise InvalidRequest("a translation request needs 'segments', a list of strings", "messages")
    return str(request.get("to") or "xx"), segments


def translate(target: str, segments: list[str], mode: str, append: str = "") -> str:
    out = [f"[{target}] {s}{append}" for s in segments]
    if mode == "drop_placeholders":
        out = [BRACE_PLACEHOLDER.sub("", s) for s in out]
    return json.dumps({"segments": out}, ensure_ascii=False)


def prompt_tokens_of(messages: list[dict]) -> int:
    return sum(len(_text_of(m.get("content"))) for m in messages) // 4 + 3 * len(messages)


def completion(model: str, messages: list[dict], schema: dict | None, *, malformed: bool = False,
               content: str | None = None, max_tokens: int | None = None) -> dict:
    digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()
    rng = random.Random(digest)
    if content is None and schema is None:
        asked = next((_text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        content = f"Simulated answer to {asked[:60]!r}: " + " ".join(rng.choice(WORDS) for _ in range(12))
    elif content is None:
        content = json.dumps(generate(schema, rng))
    if malformed:  # what a model cut off mid-answer sends: never valid JSON
        content = "```json\n" + content[: len(content) // 2]
    prompt_tokens = prompt_tokens_of(messages)
    completion_tokens = max(1, len(content) // 4)
    finish_reason = "stop"
    if max_tokens is not None and completion_tokens > max_tokens:  # cut at the limit, as a model is
        content, completion_tokens, finish_reason = content[: max_tokens * 4], max_tokens, "length"
    return {
        "id": f"chatcmpl-sim{digest[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_fleet_sim",
        "choices": [{"index": 0, "finish_reason": finish_reason, "logprobs": None,
                     "message": {"role": "assistant", "content": content, "refusal": None}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


class OpenAISimulator(SimulatorApp):
    rules = [Rule("/v1/chat/completions", endpoint="chat", methods=["POST"]), *BATCH_RULES]

    def __init__(self, faults: FaultState, api_key: str | None = None, rpm: int = 0, tpm: int = 0,
                 window: float = 60, batch_seconds: float = 6):
        super().__init__(faults)
        self.batch_api = BatchAPI(self.answer, batch_seconds)
        self.api_key = api_key
        self._initial_limits = dict(rpm=rpm, tpm=tpm, window=window)
        self.limits = RateLimits(rpm, tpm, window)
        self._lock = threading.Lock()
        self.translation_mode = "mark"
        self.translation_append = ""
        self.translated: Counter[str] = Counter()  # segment SHA-1 -> times translated

    def apply_control(self, changes: dict) -> None:
        mode = changes.pop("translation_mode", None)
        if mode is not None and mode not in TRANSLATION_MODES:
            raise ValueError(f"translation_mode must be one of {', '.join(TRANSLATION_MODES)}")
        limits = {name: changes.pop(name) for name in ("rpm", "tpm", "window") if name in changes}
        if limits:
            self.limits.configure(**limits)
        append = changes.pop("translation_append", None)
        if append is not None and not isinstance(append, str):
            raise ValueError("translation_append must be a string")
        self.batch_api.control(changes)
        super().apply_control(changes)
        if mode is not None:
            self.translation_mode = mode
        if append is not None:
            self.translation_append = append

    def describe(self) -> dict:
        with self._lock:
            translations = {"mode": self.translation_mode, "append": self.translation_append, "segments": sum(self.translated.values()),
                            "by_segment": dict(self.translated)}
        return {**super().describe(), "translations": translations, "limits": self.limits.describe(),
                "batches": self.batch_api.describe()}

    def on_reset(self, request: Request) -> Response:
        with self._lock:
            self.translation_mode = "mark"
            self.translation_append = ""
            self.translated.clear()
        self.limits.configure(**self._initial_limits)
        self.batch_api.reset()
        return super().on_reset(request)

    def error(self, status: int, message: str, fault: str | None = None, param: str | None = None) -> Response:
        kind, code = (ERROR_TYPES.get(fault) or ERROR_TYPES.get(status)
                      or ("server_error" if status >= 500 else "invalid_request_error", None))
        if fault == "quota":
            message = "You exceeded your current quota, please check your plan and billing details."
        elif fault == "429":
            message = f"Rate limit reached for requests. Please try again in {self.faults.config['retry_after']:g}s."
        body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
        return json_response(body, status)

    def _refuse(self, request: Request) -> Response | None:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return self.error(401, "You didn't provide an API key. You need to provide your API key in an "
                                   "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
        if self.api_key is not None and key.strip() != self.api_key:
            shown = f"{key[:3]}***{key[-4:]}" if len(key) > 12 else "***"  # OpenAI shows a masked key, too
            return self.error(401, f"Incorrect API key provided: {shown}. You can find your API key at "
                                   "https://platform.openai.com/account/api-keys.")
        return None

    def on_chat(self, request: Request) -> Response:
        self.faults.arrive()
        self.limits.arrive()
        refused = self._refuse(request)
        if refused:
            self.faults.record("401")
            return refused
        outcome, failure = self.inject()
        if failure:
            return failure
        body = request.get_json(silent=True)
        try:
            model, messages, schema = parse_request(body)
            asked = translation_request(body, messages)
            max_tokens = completion_limit(body)
        except InvalidRequest as exc:
            self.faults.record("400")
            return self.error(400, str(exc), param=exc.param)
        key = request.headers.get("Authorization", "").partition(" ")[2].strip()
        prompt_tokens = prompt_tokens_of(messages)
        hit, wait, headers = self.limits.admit(key, prompt_tokens + (max_tokens or DEFAULT_COMPLETION_TOKENS))
        if hit:
            self.faults.record("429")
            return self.rate_limited(model, hit, wait, headers)
        self.faults.record(outcome)
        answer = self._complete(model, messages, schema, asked, max_tokens, outcome)
        headers = self.limits.charge(key, answer["usage"]["total_tokens"])
        return json_response(answer, headers=headers)

    def _complete(self, model: str, messages: list[dict], schema: dict | None, asked, max_tokens: int | None,
                  outcome: str = "ok") -> dict:
        content = None
        if asked is not None:
            target, segments = asked
            content = translate(target, segments, self.translation_mode, self.translation_append)
            if outcome == "ok":
                with self._lock:
                    self.translated.update(segment_digest(s) for s in segments)
        return completion(model, messages, schema, malformed=outcome == "malformed", content=content,
                          max_tokens=max_tokens)

    def answer(self, body: dict) -> tuple[int, dict]:
        """A request of a batch answered as the live endpoint answers it: (status, body)."""
        try:
            model, messages, schema = parse_request(body)
            asked = translation_request(body, messages)
            max_tokens = completion_limit(body)
        except InvalidRequest as exc:
            return 400, {"error": {"message": str(exc), "type": "invalid_request_error", "param": exc.param,
                                   "code": None}}
        return 200, self._complete(model, messages, schema, asked, max_tokens)

    def __getattr__(self, name: str):
        """The Files and Batches endpoints (`on_files_*`, `on_batches_*`), behind the same API key check."""
        if name.startswith(("on_files_", "on_batches_")):
            handler = getattr(self.batch_api, name)
            return lambda request, **args: self._refuse(request) or handler(request, **args)
        raise AttributeError(name)

    def rate_limited(self, model: str, hit: str, wait: float, headers: dict) -> Response:
        limit = self.limits.rpm if hit == "requests" else self.limits.tpm
        unit = "RPM" if hit == "requests" else "TPM"
        body = {"error": {"message": f"Rate limit reached for {model} in organization org-fleet-sim on {hit} per "
                                     f"min ({unit}): Limit {limit}. Please try again in {duration(wait)}.",
                          "type": hit, "param": None, "code": "rate_limit_exceeded"}}
        return json_response(body, 429, headers={**headers, "retry-after": str(max(1, math.ceil(wait))),
                                                 "retry-after-ms": str(max(1, math.ceil(wait * 1000)))})


def completion_limit(body: dict) -> int | None:
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequest("max_completion_tokens must be a positive integer", "max_completion_tokens")
    return value


def openai_app(*, api_key: str | None = None, fail: dict | None = None, latency_ms: float = 0,
               retry_after: float = 1, hang_seconds: float = 30, seed: int | None = None, rpm: int = 0,
               tpm: int = 0, window: float = 60, batch_seconds: float = 6) -> OpenAISimulator:
    faults = FaultState(fail=fail, latency_ms=latency_ms, retry_after=retry_after, hang_seconds=hang_seconds, seed=seed)
    return OpenAISimulator(faults, api_key=api_key, rpm=rpm, tpm=tpm, window=window, batch_seconds=batch_seconds)


def start_openai_simulator(*, host: str = "127.0.0.1", port: int = 0, **options) -> SimulatorServer:
    """Serve an OpenAI simulator in a daemon thread; `.url` ends in `/v1` like OPENAI_BASE_URL."""
    return SimulatorServer(openai_app(**options), host=host, port=port, api_path="/v1")
