"""Documents cut into segments to translate, and put back together: plain text, Markdown, JSON."""
from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

from core.errors import JobError

MAX_SEGMENT_CHARS = 4_000  # a paragraph longer than this is cut on lines, then sentences
MARKDOWN_SUFFIXES = {".md", ".markdown", ".mdown", ".mkd"}
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


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


MAX_JSON_DEPTH = 100  # arrays and objects within each other; deeper is no translation file
JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
JSON_BRACKET = re.compile(r"[\[\]{}]")


def json_depth(text: str) -> int:
    """How deep arrays and objects nest in a JSON text (strings skipped), without recursing."""
    depth = deepest = 0
    for bracket in JSON_BRACKET.findall(JSON_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


class RawNumber:
    """A JSON number as its source text: written back exactly (`1E2`, `1e400`, 20 digits)."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


def _no_constant(name: str):
    raise JobError("ERR_INPUT_FILE", f"not valid JSON: {name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    found = dict(pairs)
    if len(found) < len(pairs):
        seen: set[str] = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise JobError("ERR_INPUT_FILE", f"duplicate key {duplicate[:80]!r} in an object: which value to keep is ambiguous")
    return found


class JsonDocument:
    """A JSON file's string values (at any depth) translated; keys, numbers (their text) and
    layout kept. A file that cannot be kept exactly fails with ERR_INPUT_FILE: nested deeper than
    MAX_JSON_DEPTH, NaN or Infinity (not JSON), a key twice in one object."""

    def __init__(self, text: str):
        depth = json_depth(text)
        if depth > MAX_JSON_DEPTH:
            raise JobError("ERR_INPUT_FILE", f"JSON nested {depth:,} levels deep; at most {MAX_JSON_DEPTH} are translated")
        try:
            self.data = json.loads(text, parse_float=RawNumber, parse_int=RawNumber, parse_constant=_no_constant,
                                   object_pairs_hook=_unique_keys)
        except (ValueError, RecursionError) as exc:
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
        # json writes a number it parsed as a float or int in its own spelling; each RawNumber is
        # written as a unique string first, then replaced by its source text
        numbers: list[str] = []
        nonce = uuid.uuid4().hex

        def as_token(value):
            if isinstance(value, RawNumber):
                numbers.append(value.text)
                return f"{nonce}:{len(numbers) - 1}"
            raise TypeError(f"{type(value).__name__} is not JSON")

        text = json.dumps(self.root[0], ensure_ascii=False, indent=self.indent, default=as_token)
        text = re.sub(f'"{nonce}:(\\d+)"', lambda m: numbers[int(m.group(1))], text)
        return text + "\n" if self.trailing_newline else text


def file_format(path: Path) -> str:
    suffix = path.suffix.lower()
    return "json" if suffix == ".json" else "markdown" if suffix in MARKDOWN_SUFFIXES else "text"


def parse(text: str, fmt: str) -> TextDocument | JsonDocument:
    return JsonDocument(text) if fmt == "json" else TextDocument(text, markdown=fmt == "markdown")
