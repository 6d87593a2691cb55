"""The files: read checked, named after their translation, written atomically."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from core.errors import JobError

MAX_FILE_BYTES = 2 * 1024 * 1024


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
