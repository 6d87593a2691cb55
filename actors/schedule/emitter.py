"""The leader's emission loop: each tick, the slots that came due are emitted and the missed recorded."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from peewee import fn

from actors.schedule.emit import MISSED, ORPHAN_CLAIM, Due, emit, record_missed, resend_unsent
from actors.schedule.files import UTC, Entry, Schedule
from actors.schedule.ledger import paused_names
from core import formats
from db.models.schedule import ScheduleRun

log = logging.getLogger("fleet.schedule")

MISSED_ROWS = 1_000  # at most this many missed slots of an entry are listed one by one
LATE_NOTED = 1.0  # seconds: a slot emitted this late says so in its row


class SlotEmitter:
    """What the leading scheduler does each tick: emit the slots that came due, record the missed.

    A slot is emitted while it is at most `grace` seconds late (longer than a leader takeover,
    so the slots due during a handover are emitted late, each once). A slot later than that is
    `missed`, unless its entry says `catch_up = "latest"`: then the latest is emitted once
    within `catch_up_window`.
    Where each entry stands is read from the ledger when a scheduler starts to lead.
    """

    def __init__(self, schedule: Schedule, claimed_by: str, grace: float):
        self.schedule = schedule
        self.claimed_by = claimed_by
        self.grace = timedelta(seconds=grace)
        self.cursors: dict[str, datetime] = {}  # entry -> its last slot handled (aware UTC)
        self.upcoming: dict[str, datetime | None] = {}
        self.unsure = True  # claims may have been left unsent (a new leader, or a tick that failed)

    def start(self, now: datetime) -> None:
        """Take up each entry where the ledger says the last leader left it."""
        self.unsure = True
        for entry in self.schedule.enabled:
            last = (ScheduleRun.select(fn.MAX(ScheduleRun.slot_time))
                    .where((ScheduleRun.name == entry.name) & (ScheduleRun.kind != "manual")).scalar())
            self._move(entry, last.replace(tzinfo=UTC) if last else now)

    def _move(self, entry: Entry, cursor: datetime) -> None:
        self.cursors[entry.name] = cursor
        self.upcoming[entry.name] = entry.next_slot(cursor)

    def tick(self, now: datetime) -> datetime | None:
        """Handle every slot due by `now`; returns when the next one is due. An error (database,
        Redis) leaves every entry where it was, so the next tick handles the same slots again:
        claims that already happened are not repeated."""
        if self.unsure:
            resend_unsent(self.schedule, min(self.grace, ORPHAN_CLAIM))
            self.unsure = False
        dues: list[list[Due]] = []  # each entry's due slots, oldest first
        missed_slots: list[tuple[Entry, list[datetime], int, str]] = []
        handled: dict[str, datetime] = {}
        for entry in self.schedule.enabled:
            upcoming = self.upcoming[entry.name]
            if upcoming is None or upcoming > now:
                continue
            slots, total = entry.slots_between(self.cursors[entry.name], now, MISSED_ROWS + 1)
            if not slots:  # its slots are older than any look back: take it up from now
                handled[entry.name] = now
                continue
            latest = handled[entry.name] = slots[-1]
            late = (now - latest).total_seconds()
            # every slot still within the grace is emitted, late if need be (those due during a
            # leader's takeover, or behind a slow tick); older ones are missed
            in_grace = [s for s in slots if now - s <= self.grace]
            missed = slots[:len(slots) - len(in_grace)]
            if in_grace:
                dues.append([Due(entry, s, detail=_late(now, s)) for s in in_grace])
            elif entry.catch_up == "latest" and late <= entry.catch_up_window:
                dues.append([Due(entry, latest, "catch-up", f"emitted {formats.roughly(late)} late, on catch-up")])
                missed = slots[:-1]
            if missed:
                unlisted = total - len(slots)  # older slots than those listed
                missed_slots.append((entry, missed[-MISSED_ROWS:], unlisted + len(missed), MISSED))
        record_missed(missed_slots, self.claimed_by)
        if dues:
            self._emit(dues)
        for name, latest in handled.items():
            self._move(self.schedule.entries[name], latest)
        pending = [t for t in self.upcoming.values() if t is not None]
        return min(pending) if pending else None

    def _emit(self, dues: list[list[Due]]) -> None:
        """In rounds of one slot an entry (its oldest first), as `emit` claims them."""
        self.unsure = True
        rounds = max(len(d) for d in dues)
        claimed = emitted = 0
        for i in range(rounds):
            found = emit([d[i] for d in dues if i < len(d)], self.claimed_by, paused_names())
            claimed += len(found)
            emitted += sum(r.state == "emitted" for r in found.values())
        self.unsure = False
        log.info("schedule tick", extra={"due": sum(len(d) for d in dues), "claimed": claimed, "emitted": emitted})


def _late(now: datetime, slot: datetime) -> str | None:
    late = (now - slot).total_seconds()
    return f"emitted {late:.1f} s late, within the grace" if late >= LATE_NOTED else None
