"""Translations: a batch kind that translates files, one item a file, with OpenAI.

Plain text and Markdown are cut on paragraph boundaries (fenced code stays as it is), JSON
files have their string values translated and their keys kept. Segments go to the model in
requests of at most MAX_REQUEST_CHARS; the answer (Structured Outputs) must have as many
segments, each with the same placeholders (`{name}`, `%s`, `:count`, HTML tags), or the item
fails with ERR_INVALID_RESPONSE. The output is written atomically (temporary file, then
rename) as `OUT/<name>`, or `<stem>.<to><suffix>` beside the input. Cost and tokens come from
each response's usage. An unreadable, binary or non-UTF-8 input fails its item with
ERR_INPUT_FILE, never the batch.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pycountry
from werkzeug.utils import secure_filename

from actors.batches import ItemRun, batch_kind, create_batch
from core.errors import FleetError, JobError
from core.settings import get_settings
from db.models.batches import Batch

KIND = "translation"
MAX_FILE_BYTES = 2 * 1024 * 1024
MAX_SEGMENT_CHARS = 4_000  # a paragraph longer than this is cut on lines, then sentences
MAX_REQUEST_CHARS = 12_000  # text a request: ~3,000 tokens in, as many out, well within the model's limits
MAX_REQUEST_SEGMENTS = 100
MARKDOWN_SUFFIXES = {".md", ".markdown", ".mdown", ".mkd"}

# What must come back unchanged: {name} {{ name }} {0}, printf's %s %d %(name)s %1$s %.2f,
# Laravel's :count, and HTML tags.
PLACEHOLDER = re.compile(r"""
      \{\{?\s*[\w.\-]*\s*\}?\}
    | %\d+\$[sd]
    | %(?:\(\w+\))?[-+\ #0]*\d*(?:\.\d+)?[sdifuxXeEgGc]
    | (?<![\w:/]):[A-Za-z_]\w*
    | </?[A-Za-z][^<>]*>
""", re.X)
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")

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


# -- languages ----------------------------------------------------------------------------------

def language_name(code: str) -> str | None:
    """English name of an ISO 639-1 code ("de" → "German"), or None if it is not one."""
    if not isinstance(code, str) or not re.fullmatch(r"[a-z]{2}", code):
        return None
    found = pycountry.languages.get(alpha_2=code)
    return found.name if found else None


def languages() -> list[tuple[str, str]]:
    """(code, name) of every ISO 639-1 language, by name."""
    return sorted(((lang.alpha_2, lang.name) for lang in pycountry.languages if hasattr(lang, "alpha_2")),
                  key=lambda pair: pair[1])


# -- documents: the text cut into segments, and put back together ------------------------------

def _split_long(text: str) -> list[tuple[str, bool]]:
    """A paragraph as pieces of at most MAX_SEGMENT_CHARS: cut on lines, then sentences, then hard."""
    if len(text) <= MAX_SEGMENT_CHARS:
        return [(text, True)]
    for boundary in (re.compile(r"\n"), SENTENCE_END):
        parts = boundary.split(text)
        if len(parts) > 1:
            separators = boundary.findall(text)
            pieces: list[tuple[str, bool]] = []
            for part, separator in zip(parts, separators + [""]):
                pieces += _split_long(part) if part else []
                if separator:
                    pieces.append((separator, False))
            return pieces
    return [(text[i:i + MAX_SEGMENT_CHARS], True) for i in range(0, len(text), MAX_SEGMENT_CHARS)]


def _paragraph(lines: list[str]) -> list[tuple[str, bool]]:
    text = "".join(lines)
    body = text.rstrip()
    indent = len(body) - len(body.lstrip())
    pieces = [(body[:indent], False)] if indent else []
    pieces += _split_long(body[indent:])
    return pieces + ([(text[len(body):], False)] if len(text) > len(body) else [])


def text_pieces(text: str, markdown: bool = False) -> list[tuple[str, bool]]:
    """The text as (piece, translate?) in order; joined, the pieces are the text again.
    Paragraphs are translated; blank lines, surrounding whitespace and (in Markdown) fenced
    code blocks are kept as they are."""
    pieces: list[tuple[str, bool]] = []
    paragraph: list[str] = []
    fence: list[str] = []
    marker = ""

    def flush():
        if paragraph:
            pieces.extend(_paragraph(paragraph))
            paragraph.clear()

    for line in text.splitlines(keepends=True):
        if fence:
            fence.append(line)
            if line.strip().startswith(marker):
                pieces.append(("".join(fence), False))
                fence.clear()
            continue
        opening = FENCE.match(line) if markdown else None
        if opening:
            flush()
            marker = opening.group(1)
            fence.append(line)
        elif not line.strip():
            flush()
            pieces.append((line, False))
        else:
            paragraph.append(line)
    flush()
    if fence:
        pieces.append(("".join(fence), False))
    return [(p, t and bool(p.strip())) for p, t in pieces if p]


class TextDocument:
    def __init__(self, text: str, markdown: bool):
        self.pieces = text_pieces(text, markdown)

    @property
    def segments(self) -> list[str]:
        return [p for p, translate in self.pieces if translate]

    def render(self, translated: Iterator[str]) -> str:
        return "".join(next(translated) if translate else p for p, translate in self.pieces)


class JsonDocument:
    """A JSON file's string values (at any depth) translated; keys, numbers and layout kept."""

    def __init__(self, text: str):
        try:
            self.data = json.loads(text)
        except ValueError as exc:
            raise JobError("ERR_INPUT_FILE", f"not valid JSON: {exc}") from None
        self.indent = 2 if "\n" in text.strip() else None
        self.trailing_newline = text.endswith("\n")
        self.leaves: list[tuple[object, object, TextDocument]] = []  # (container, key, the value's pieces)
        self.root = [self.data]
        self._collect(self.root, 0)

    def _collect(self, container, key) -> None:
        value = container[key]
        if isinstance(value, str):
            if value.strip():
                self.leaves.append((container, key, TextDocument(value, markdown=False)))
        elif isinstance(value, dict):
            for k in value:
                self._collect(value, k)
        elif isinstance(value, list):
            for i in range(len(value)):
                self._collect(value, i)

    @property
    def segments(self) -> list[str]:
        return [s for _, _, doc in self.leaves for s in doc.segments]

    def render(self, translated: Iterator[str]) -> str:
        for container, key, doc in self.leaves:
            container[key] = doc.render(translated)
        text = json.dumps(self.root[0], ensure_ascii=False, indent=self.indent)
        return text + "\n" if self.trailing_newline else text


def file_format(path: Path) -> str:
    suffix = path.suffix.lower()
    return "json" if suffix == ".json" else "markdown" if suffix in MARKDOWN_SUFFIXES else "text"


def parse(text: str, fmt: str) -> TextDocument | JsonDocument:
    return JsonDocument(text) if fmt == "json" else TextDocument(text, markdown=fmt == "markdown")


# -- files ------------------------------------------------------------------------------------

def read_input(path: Path) -> str:
    """The file as text, or JobError ERR_INPUT_FILE saying why it cannot be."""
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise JobError("ERR_INPUT_FILE", f"{path} is not a regular file")
        if size > MAX_FILE_BYTES:
            raise JobError("ERR_INPUT_FILE", f"{path} has {size:,} bytes; at most {MAX_FILE_BYTES:,} are translated")
        data = path.read_bytes()
    except FileNotFoundError:
        raise JobError("ERR_INPUT_FILE", f"{path}: no such file") from None
    except OSError as exc:
        raise JobError("ERR_INPUT_FILE", f"{path}: cannot be read ({exc.strerror or exc})") from None
    if b"\x00" in data:
        raise JobError("ERR_INPUT_FILE", f"{path} is a binary file, not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise JobError("ERR_INPUT_FILE", f"{path} is not UTF-8 text (invalid byte at offset {exc.start})") from None


def output_path(source: Path, target: str, out_dir: Path | None) -> Path:
    if out_dir is not None:
        return out_dir / source.name
    return source.with_name(f"{source.stem}.{target}{source.suffix}")


def write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename it over: readers see the old file
    or the whole new one, never half of it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise JobError("ERR_INTERNAL", f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException as exc:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise JobError("ERR_INTERNAL", f"cannot write {path}: {exc.strerror or exc}") from None
        raise


# -- the model --------------------------------------------------------------------------------

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
    expected, got = Counter(PLACEHOLDER.findall(source)), Counter(PLACEHOLDER.findall(translated))
    if expected == got:
        return None
    missing, extra = sorted((expected - got).elements()), sorted((got - expected).elements())
    parts = ([f"lost {', '.join(missing)}"] if missing else []) + ([f"added {', '.join(extra)}"] if extra else [])
    return "; ".join(parts)


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


def translate_segments(client, segments: list[str], source: str, target: str, fmt: str, run: ItemRun) -> tuple[list[str], int]:
    """The translations of `segments`, and the requests it took; each response's cost is charged to `run`."""
    translated: list[str] = []
    requests = 0
    for part in requests_for(segments):
        prompt = json.dumps({"from": source, "from_language": language_name(source), "to": target,
                             "to_language": language_name(target), "format": fmt, "segments": part}, ensure_ascii=False)
        try:
            answer = client.generate_json(SYSTEM_PROMPT, prompt, SCHEMA, "translation",
                                          max_completion_tokens=completion_tokens_for(part),
                                          check=lambda data, part=part: check_answer(part, data["segments"], len(translated)))
        except JobError as exc:
            run.charge(getattr(exc, "cost_usd", 0.0), getattr(exc, "tokens", 0))  # unusable answers are paid for too
            raise
        requests += 1
        run.charge(answer.cost_usd, answer.prompt_tokens + answer.completion_tokens)
        got = answer.data["segments"]
        translated += got
    return translated, requests


def _remove_panel_files(batch: Batch) -> None:
    """When a batch is pruned: the uploads and outputs the panel keeps for it under var/."""
    options = batch.options or {}
    if not options.get("uploads"):
        return  # started from the CLI: its files are the operator's, not ours
    var_dir = get_settings().var_dir.resolve()
    for folder in (options["uploads"], options.get("out")):
        if folder and Path(folder).resolve().is_relative_to(var_dir):
            shutil.rmtree(folder, ignore_errors=True)


@batch_kind(KIND, label="Translation", queue_name="translations", service="openai", time_limit=2 * 3600_000,
            on_prune=_remove_panel_files)
def translate_file(run: ItemRun) -> dict:
    from core.clients.openai_client import OpenAIClient

    source = Path(run.item.key)
    options = run.options
    text = read_input(source)
    fmt = file_format(source)
    document = parse(text, fmt)
    segments = document.segments
    translated, requests = [], 0
    if segments:
        client = OpenAIClient(get_settings())
        translated, requests = translate_segments(client, segments, options["from"], options["to"], fmt, run)
    out = output_path(source, options["to"], Path(options["out"]) if options.get("out") else None)
    write_atomically(out, document.render(iter(translated)))
    return {"output": str(out), "format": fmt, "segments": len(segments), "requests": requests,
            "characters": len(text)}


# -- starting a translation -------------------------------------------------------------------

def check_language(code: str, option: str) -> str:
    if language_name(code) is None:
        raise FleetError(f"{option} {code!r} is not a language code (ISO 639-1, two letters, e.g. de, nl)", exit_code=2)
    return code


def _checked_paths(files: list[str], target: str, out_dir: Path | None) -> list[Path]:
    paths = []
    for name in files:
        path = Path(name).expanduser().absolute()
        if not path.exists():
            raise FleetError(f"no such file: {name}", exit_code=2)
        if not path.is_file():
            raise FleetError(f"not a file: {name}", exit_code=2)
        paths.append(path)
    outputs: dict[Path, Path] = {}
    for path in paths:
        out = output_path(path, target, out_dir)
        if out == path:
            raise FleetError(f"{path} would be overwritten by its own translation; choose another --out", exit_code=2)
        if out in outputs:
            raise FleetError(f"{outputs[out]} and {path} would both be written to {out}", exit_code=2)
        outputs[out] = path
    return paths


@dataclass(frozen=True)
class TranslationPlan:
    """A translation checked and ready to start."""

    paths: list[Path]
    source: str
    target: str
    out: Path | None
    title: str
    extra: dict

    def start(self, created_by: str | None = None) -> Batch:
        if self.out is not None:
            try:
                self.out.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise FleetError(f"cannot create --out {self.out}: {exc.strerror or exc}", exit_code=2) from None
        options = {"from": self.source, "to": self.target, "out": str(self.out) if self.out else None, **self.extra}
        return create_batch(KIND, self.title, [str(p) for p in self.paths], options=options, created_by=created_by)


def plan_translation(files: list[str], source: str, target: str, *, out_dir: str | None = None,
                     title: str | None = None, extra: dict | None = None) -> TranslationPlan:
    """Check the languages, the files and where their translations go, creating nothing; a
    problem is a FleetError with exit code 2."""
    check_language(source, "--from")
    check_language(target, "--to")
    if source == target:
        raise FleetError("--from and --to are the same language", exit_code=2)
    if not files:
        raise FleetError("no file to translate", exit_code=2)
    out = Path(out_dir).expanduser().absolute() if out_dir else None
    if out is not None and out.exists() and not out.is_dir():
        raise FleetError(f"--out {out_dir} is not a directory", exit_code=2)
    paths = _checked_paths(files, target, out)
    title = title or (f"Translate {paths[0].name} {source} → {target}" if len(paths) == 1
                      else f"Translate {len(paths)} files {source} → {target}")
    return TranslationPlan(paths, source, target, out, title, extra or {})


def start_uploaded_translation(files: list[tuple[str, bytes]], source: str, target: str, *,
                               created_by: str | None = None) -> Batch:
    """A translation of files uploaded to the panel: kept under var/uploads/<id>/, translated
    into var/translations/<id>/ (both removed when the batch is pruned)."""
    check_language(source, "from")
    check_language(target, "to")
    token = uuid.uuid4().hex
    var_dir = get_settings().var_dir
    uploads, out = var_dir / "uploads" / token, var_dir / "translations" / token
    uploads.mkdir(parents=True)
    names: list[str] = []
    for n, (name, content) in enumerate(files, start=1):
        safe = secure_filename(name) or f"file-{n}.txt"
        while safe in names:
            stem, dot, suffix = safe.partition(".")
            safe = f"{stem}-{n}{dot}{suffix}"
        names.append(safe)
        (uploads / safe).write_bytes(content)
    try:
        plan = plan_translation([str(uploads / name) for name in names], source, target, out_dir=str(out),
                                extra={"uploads": str(uploads)})
        return plan.start(created_by)
    except Exception:
        shutil.rmtree(uploads, ignore_errors=True)
        raise
