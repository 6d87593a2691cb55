"""The translation batch kind: one item a file."""
from __future__ import annotations

import shutil
from pathlib import Path

from actors.batches import ItemRun, batch_kind
from actors.translations.documents import file_format, parse
from actors.translations.files import output_path, read_input, write_atomically
from actors.translations.model import translate_segments
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
