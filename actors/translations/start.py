"""Starting a translation: from the CLI's files, or from files uploaded to the panel."""
from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from werkzeug.utils import secure_filename

from actors.batches import create_batch
from actors.outbox import NotSent
from actors.translations.files import output_path
from actors.translations.kind import KIND
from actors.translations.languages import check_language
from core.errors import FleetError
from core.settings import get_settings
from db.models.batches import Batch


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


MAX_UPLOAD_NAME = 100  # characters of an uploaded file's name on disk (secure_filename's are ASCII)


def stored_name(name: str, n: int) -> str:
    """An uploaded file's name as it is kept on disk: safe, and short enough for any file system
    (its suffix kept, which says the format)."""
    safe = secure_filename(name) or f"file-{n}.txt"
    if len(safe) > MAX_UPLOAD_NAME:
        stem, suffix = os.path.splitext(safe)
        suffix = suffix[:20]
        safe = f"{stem[:MAX_UPLOAD_NAME - len(suffix) - len(str(n)) - 1]}-{n}{suffix}"
    return safe


def start_uploaded_translation(files: list[tuple[str, bytes]], source: str, target: str, *,
                               created_by: str | None = None) -> Batch:
    """A translation of files uploaded to the panel: kept under var/uploads/<id>/ (names made
    safe and short; the originals kept in the batch's options for display), translated into
    var/translations/<id>/ (both removed when the batch is pruned). An upload that fails leaves
    nothing behind."""
    check_language(source, "from")
    check_language(target, "to")
    token = uuid.uuid4().hex
    var_dir = get_settings().var_dir
    uploads, out = var_dir / "uploads" / token, var_dir / "translations" / token
    names: list[str] = []
    originals: dict[str, str] = {}
    try:
        uploads.mkdir(parents=True)
        for n, (name, content) in enumerate(files, start=1):
            safe = stored_name(name, n)
            while safe in names:
                stem, dot, suffix = safe.partition(".")
                safe = f"{stem}-{n}{dot}{suffix}"
            names.append(safe)
            originals[safe] = name
            (uploads / safe).write_bytes(content)
        plan = plan_translation([str(uploads / name) for name in names], source, target, out_dir=str(out),
                                extra={"uploads": str(uploads), "original_names": originals})
        return plan.start(created_by)
    except NotSent:
        raise  # the batch is saved and its jobs are in the outbox: its files must stay
    except BaseException as exc:
        shutil.rmtree(uploads, ignore_errors=True)
        if isinstance(exc, OSError):
            raise FleetError(f"the uploaded files could not be stored ({exc.strerror or exc}); nothing was kept") from None
        raise
