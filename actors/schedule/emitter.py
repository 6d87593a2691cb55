"""The leader's emission loop: each tick, the slots that came due are emitted and the missed recorded."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from peewee import fn

from actors.schedule.emit import COALESCED, MISSED, ORPHAN_CLAIM, Due, emit, record_missed, resend_unsent
from actors.schedule.files import UTC, Entry, Schedule
from actors.schedule.ledger import paused_names
from core import formats
from db.models.schedule import ScheduleRun

log = logging.getLogger("fleet.schedule")

MISSED_ROWS = 1_000  # at most this many missed slots of an entry are listed one by one


class SlotEmitter:
    """What the leading scheduler does each tick: emit the slots that came due, record the missed.

    A slot is emitted while it is at most `grace` seconds late (longer than a leader takeover,
    so a handover never skips one); of several due slots of one entry only the latest is
    emitted and the earlier are `missed`. A slot later than that is `missed` too, unless its
    entry says `catch_up = "latest"`: then the latest is emitted once within `catch_up_window`.
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
        dues: list[Due] = []
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
            coalesced: list[datetime] = []
            if late <= self.grace.total_seconds():
                dues.append(Due(entry, latest))
                missed = slots[:-1]
                # due together within the grace (a leader's takeover): only the latest is emitted
                coalesced = [s for s in missed if now - s <= self.grace]
                missed = missed[:len(missed) - len(coalesced)]
            elif entry.catch_up == "latest" and late <= entry.catch_up_window:
                dues.append(Due(entry, latest, "catch-up", f"emitted {formats.roughly(late)} late, on catch-up"))
                missed = slots[:-1]
            else:
                missed = slots
            if missed:
                unlisted = total - len(slots)  # older slots than those listed
                missed_slots.append((entry, missed[-MISSED_ROWS:], unlisted + len(missed), MISSED))
            if coalesced:
                missed_slots.append((entry, coalesced, len(coalesced), COALESCED))
        record_missed(missed_slots, self.claimed_by)
        if dues:
            self.unsure = True
            claimed = emit(dues, self.claimed_by, paused_names())
            self.unsure = False
            log.info("schedule tick", extra={"due": len(dues), "claimed": len(claimed),
                                              "emitted": sum(r.state == "emitted" for r in claimed.values())})
        for name, latest in handled.items():
            self._move(self.schedule.entries[name], latest)
        pending = [t for t in self.upcoming.values() if t is not None]
        return min(pending) if pending else None

