"""What the TOML files operators write (schedules, alert rules) share: finding one by its path or
shipped name, reading it, and an error that lists every problem."""
from __future__ import annotations

from pathlib import Path

import tomllib

from core.errors import FleetError


class FileProblems(FleetError):
    """An invalid file: one line a problem, each naming what it is about."""

    exit_code = 2

    def __init__(self, problems: list[str]):
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        super().__init__(problems[0] + more)
        self.problems = problems


def find_file(value: str, shipped: Path, what: str, error: type[FileProblems], setting: str | None = None) -> Path:
    """`value` as a path, or the name of a file shipped in `shipped` (`default`, `default.toml`)."""
    path = Path(value)
    if path.is_file():
        return path
    named = shipped / (value if value.endswith(".toml") else f"{value}.toml")
    if "/" not in value and named.is_file():
        return named
    names = ", ".join(sorted(p.stem for p in shipped.glob("*.toml")))
    problem = f"{value!r} is a directory, not a {what}" if path.is_dir() else f"no {what} {value!r}"
    problem += f" (a path, or a shipped one: {names})"
    raise error([f"{setting}: {problem}" if setting else problem])


def read_toml(path: Path, error: type[FileProblems]) -> dict:
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise error([f"{path}: not a valid TOML file: {exc}"]) from None
