"""The CLI's side of the audit log: the OS user at the keyboard (role `cli`, the host as the
address), and the one list of the commands that change state.

`audit_commands` wraps each listed command once, at registration: after the command succeeds
it is recorded as `<group>.<command>` with its arguments as the target, unless it recorded
itself (with the rows it touched) through `record`. A command that fails records nothing.
"""
from __future__ import annotations

import functools
import getpass
import logging
import os
import socket

import click
from peewee import DatabaseError

from actors import audit
from core.errors import FleetError
from db.database import DatabaseMissing

log = logging.getLogger("fleet.audit")

# group → its state-changing commands (a command of no group: under ""); `name:flag` is a
# command that changes state only with that flag (`jobs outbox --send`)
STATE_CHANGING = {
    "accounts": ("create", "set-password", "set-role", "disable", "enable"),
    "alerts": ("silence", "unsilence", "test"),
    "batches": ("cancel", "resume", "retry"),
    "breakers": ("reset", "trip"),
    "db": ("migrate",),
    "episodes": ("import-missing-data", "check-data-updates", "sync"),
    "jobs": ("requeue", "delete", "cleanup", "outbox:send", "cancel"),
    "queues": ("pause", "resume"),
    "schedule": ("run", "pause", "resume"),
    "series": ("import-missing-data", "check-data-updates", "sync", "add"),
    "tokens": ("create", "revoke"),
    "workers": ("forget",),
    "workouts": ("add-user", "create-plan", "retry-failed", "generate", "rescue-stale"),
    "": ("translate",),
}
SECRET_WORDS = ("password", "token", "secret", "key")

_recorded = False


def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a uid with no passwd entry (a container)
        return f"uid:{os.getuid()}"


def record(action: str, target: str = "", rows: int | None = None) -> None:
    """Note a state-changing command (the database must be open)."""
    global _recorded
    _recorded = True
    audit.record(action, who=os_user(), role="cli", target=target, rows=rows, source="cli",
                 address=socket.gethostname())


def _target(params: dict) -> str:
    shown = []
    for name, value in params.items():
        if value in (None, False, ()) or any(word in name for word in SECRET_WORDS):
            continue
        value = " ".join(map(str, value)) if isinstance(value, (tuple, list)) else value
        shown.append(f"{name}={value}")
    return " ".join(shown)


def _audited(action: str, callback, flag: str = ""):
    @functools.wraps(callback)
    def run(*args, **kwargs):
        global _recorded
        _recorded = False
        result = callback(*args, **kwargs)
        if not _recorded and (not flag or kwargs.get(flag)):
            from fleet.cli.database import open_database

            try:
                open_database(require_schema=False)
            except (FleetError, DatabaseMissing, DatabaseError) as exc:  # the command did its work: only its record is lost
                log.error("the audit log could not be written: %s", exc, extra={"action": action})
                return result
            record(action, _target(kwargs))
        return result

    return run


def audit_commands(cli: click.Group) -> None:
    for group_name, names in STATE_CHANGING.items():
        group = cli.commands.get(group_name) if group_name else cli
        for entry in names:
            name, _, flag = entry.partition(":")
            command = group.commands.get(name) if isinstance(group, click.Group) else None
            if command is not None and command.callback is not None:
                command.callback = _audited(f"{group_name or 'fleet'}.{name}", command.callback, flag)
