"""Documents cut into segments to translate, and put back together: plain text, Markdown, JSON."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator

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
