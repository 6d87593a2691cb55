"""The audit log: one call for every state-changing action of the panel, the CLI and the API,
and what the Audit page and the cleanup read.

`record` never raises: the action it describes has already happened, so a failed write is
logged (with everything the row would have held) rather than turned into the action's error.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from peewee import DatabaseError

from core.trace import trace_id as current_trace_id
from db.models import utcnow
from db.models.audit import AuditEvent

log = logging.getLogger("fleet.audit")

SOURCES = AuditEvent.SOURCES
MAX_TARGET = 2000  # characters of the target or filter kept (a filter pasted by hand can be long)
PRUNE_BATCH = 5_000


def record(action: str, *, who: str, role: str, target: str = "", rows: int | None = None, source: str = "panel",
           address: str = "", trace_id: str = "") -> None:
    """Note one action: `action` dotted ("jobs.retry"), `who` an email, `token:NAME` or the OS user,
    `target` an id, a name or the filter it acted on, `rows` how many it touched, `source` one of
    panel/cli/api, `address` the client's (proxy-aware) address. The trace id defaults to the
    current one."""
    if source not in SOURCES:
        raise ValueError(f"audit source must be one of {', '.join(SOURCES)}, not {source!r}")
    row = dict(action=action, who=who, role=role, target=(target or "")[:MAX_TARGET], rows=rows, source=source,
               address=address or "", trace_id=trace_id or current_trace_id() or "")
    try:
        AuditEvent.create(**row)
    except DatabaseError:
        log.exception("the audit log could not be written", extra={"audit": row})


@dataclass(frozen=True)
class AuditFilter:
    """What the Audit page, its CSV and `fleet audit` filter on; empty means any."""

    who: str = ""
    action: str = ""  # a whole action ("jobs.retry") or its domain ("jobs")
    source: str = ""
    target: str = ""  # a part of the target
    since: datetime | None = None
    until: datetime | None = None


def matching(flt: AuditFilter):
    """The matching events, newest first (a query: page it or stream it)."""
    query = AuditEvent.select().order_by(AuditEvent.id.desc())
    if flt.who:
        query = query.where(AuditEvent.who == flt.who)
    if flt.action:
        query = query.where((AuditEvent.action == flt.action) | AuditEvent.action.startswith(flt.action + "."))
    if flt.source:
        query = query.where(AuditEvent.source == flt.source)
    if flt.target:
        query = query.where(AuditEvent.target.contains(flt.target))
    if flt.since:
        query = query.where(AuditEvent.created_at >= flt.since)
    if flt.until:
        query = query.where(AuditEvent.created_at < flt.until)
    return query


def actions() -> list[str]:
    """Every action recorded so far, for the page's filter."""
    return [a for (a,) in AuditEvent.select(AuditEvent.action).distinct().order_by(AuditEvent.action).tuples()]


def prune(days: float) -> int:
    """Delete events older than `days` (the audit log's own retention), in batches."""
    cutoff = utcnow() - timedelta(days=days)
    deleted = 0
    while True:
        ids = [i for (i,) in AuditEvent.select(AuditEvent.id).where(AuditEvent.created_at < cutoff)
               .limit(PRUNE_BATCH).tuples()]
        if not ids:
            return deleted
        deleted += AuditEvent.delete().where(AuditEvent.id.in_(ids)).execute()
