"""The CLI's side of the audit log: the OS user at the keyboard, role `cli`."""
from __future__ import annotations

import getpass
import os

from actors import audit


def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a uid with no passwd entry (a container)
        return f"uid:{os.getuid()}"


def record(action: str, target: str = "", rows: int | None = None) -> None:
    """Note a state-changing command (the database must be open)."""
    audit.record(action, who=os_user(), role="cli", target=target, rows=rows, source="cli")
