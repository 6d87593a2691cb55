"""The translation batch kind: one item a file."""
from __future__ import annotations

import shutil
from pathlib import Path

from actors.batches import Ask, Economy, ItemRun, batch_kind
from actors.translations.documents import file_format, parse
from actors.translations.files import output_path, read_input, write_atomically
from actors.translations.model import asks_for, translate_segments
from core.settings import get_settings
from db.models.batches import Batch

KIND = "translation"


def _remove_panel_files(batch: Batch) -> None:
    """When a batch is pruned: the uploads and outputs the panel keeps for it under var/."""
    options = batch.options or {}
    if not options.get("uploads"):
        return  # started from the CLI: its files are the operator's, not ours
    var_dir = get_settings().var_dir.resolve()
    for folder in (options["uploads"], options.get("out")):
        if folder and Path(folder).resolve().is_relative_to(var_dir):
            shutil.rmtree(folder, ignore_errors=True)


def _document(run: ItemRun):
    source = Path(run.item.key)
    text = read_input(source)
    fmt = file_format(source)
    return source, text, fmt, parse(text, fmt)


def _write(run: ItemRun, source: Path, text: str, fmt: str, document, translated: list[str], requests: int) -> dict:
    """The translation written atomically beside the input or into `out`; the item's result."""
    options = run.options
    out = output_path(source, options["to"], Path(options["out"]) if options.get("out") else None)
    write_atomically(out, document.render(iter(translated)))
    return {"output": str(out), "format": fmt, "segments": len(document.segments), "requests": requests,
            "characters": len(text)}


def economy_asks(run: ItemRun) -> list[Ask]:
    """The file's requests on the economy lane: those the live lane would send."""
    _, _, fmt, document = _document(run)
    return asks_for(document.segments, run.options["from"], run.options["to"], fmt)


def economy_settle(run: ItemRun, answers: list[dict]) -> dict:
    """The file written from the provider's answers (each already checked as a live answer is)."""
    source, text, fmt, document = _document(run)
    translated = [segment for answer in answers for segment in answer["segments"]]
    return _write(run, source, text, fmt, document, translated, len(answers))


@batch_kind(KIND, label="Translation", queue_name="translations", service="openai", time_limit=2 * 3600_000,
            on_prune=_remove_panel_files, economy=Economy(economy_asks, economy_settle))
def translate_file(run: ItemRun) -> dict:
    from core.clients.openai_client import OpenAIClient

    source, text, fmt, document = _document(run)
    segments = document.segments
    translated, requests = [], 0
    if segments:
        client = OpenAIClient(get_settings())
        translated, requests = translate_segments(client, segments, run.options["from"], run.options["to"], fmt, run)
    return _write(run, source, text, fmt, document, translated, requests)
