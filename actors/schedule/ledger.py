"""The ledger an operator reads and writes: pauses, history, each entry's last runs."""
from __future__ import annotations

import getpass
import socket
from datetime import timedelta

from db.models import utcnow
from db.models.schedule import SchedulePause, ScheduleRun

SENT = ("emitted", "running", "succeeded", "failed")
PRUNE_BATCH = 5_000  # rows a DELETE takes at most


def operator_name() -> str:
    """Who runs a CLI command, for the ledger."""
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def set_paused(name: str, paused: bool, by: str) -> bool:
    """Pause or resume an entry; False when it already was so."""
    if (name in paused_names()) == paused:
        return False
    SchedulePause.insert(name=name, paused=paused, changed_by=by, changed_at=utcnow()).on_conflict(
        conflict_target=[SchedulePause.name],
        update={SchedulePause.paused: paused, SchedulePause.changed_by: by, SchedulePause.changed_at: utcnow()},
    ).execute()
    return True


def pauses() -> dict[str, SchedulePause]:
    return {row.name: row for row in SchedulePause.select().where(SchedulePause.paused == True)}  # noqa: E712


def history(name: str, limit: int = 20) -> list[ScheduleRun]:
    return list(ScheduleRun.select().where(ScheduleRun.name == name)
                .order_by(ScheduleRun.slot_time.desc()).limit(limit))


def paused_names() -> set[str]:
    return set(pauses())


def last_runs(names) -> dict[str, tuple[ScheduleRun | None, ScheduleRun | None]]:
    """Each entry's last run that was sent, and its latest slot when that one was skipped or
    missed (index lookups, two an entry at most)."""
    found = {}
    for name in names:
        latest = ScheduleRun.select().where(ScheduleRun.name == name).order_by(ScheduleRun.slot_time.desc()).first()
        if latest is None or latest.state in SENT or latest.state == "claimed":
            found[name] = (latest, None)
            continue
        sent = (ScheduleRun.select().where((ScheduleRun.name == name) & ScheduleRun.state.in_(SENT))
                .order_by(ScheduleRun.slot_time.desc()).first())
        found[name] = (sent, latest)
    return found


def prune(days: float) -> int:
    """Delete the rows whose slot is older than `days`, in batches; never an entry's latest row
    nor its latest sent one (where a new leader takes the entry up, what `fleet schedule list`
    shows). Returns how many went."""
    cutoff = utcnow() - timedelta(days=days)
    names = [row.name for row in ScheduleRun.select(ScheduleRun.name).distinct()]
    kept = {run.id for pair in last_runs(names).values() for run in pair if run is not None}
    deleted = 0
    while True:
        query = ScheduleRun.select(ScheduleRun.id).where(ScheduleRun.slot_time < cutoff)
        if kept:
            query = query.where(ScheduleRun.id.not_in(list(kept)))
        ids = [row.id for row in query.limit(PRUNE_BATCH)]
        if not ids:
            return deleted
        deleted += ScheduleRun.delete().where(ScheduleRun.id.in_(ids)).execute()


def state_text(run: ScheduleRun) -> str:
    """A row's state as an operator reads it: `failed (ERR_API_TIMEOUT)`, `skipped (overlap)`."""
    if run.state == "failed" and run.error_code:
        return f"failed ({run.error_code})"
    if run.state == "skipped" and run.detail:
        return f"skipped ({run.detail.split(':')[0]})"
    return run.state
