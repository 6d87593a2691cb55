"""The schedule's entries as operators see them: the rows `fleet schedule list` prints and the panel shows."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from actors.schedule.files import Entry, Schedule
from actors.schedule.ledger import last_runs, pauses, state_text
from core import formats
from db.models.schedule import SchedulePause, ScheduleRun


@dataclass(frozen=True)
class EntryRow:
    entry: Entry
    last: ScheduleRun | None  # its last run that was sent
    slot: ScheduleRun | None  # its latest slot, when that one was skipped or missed
    paused: SchedulePause | None
    next: datetime | None  # its next slot; None when it is disabled

    @property
    def next_text(self) -> str:
        if self.paused:
            return "paused"
        return formats.moment(self.next, self.entry.timezone, "-") if self.entry.enabled else "disabled"

    @property
    def last_text(self) -> str:
        return formats.moment(self.last.slot_time, self.entry.timezone) if self.last else "never"

    @property
    def state(self) -> str:
        return state_text(self.last) if self.last else ""

    @property
    def duration(self) -> str:
        return formats.seconds(self.last.duration_seconds) if self.last else ""

    @property
    def slot_text(self) -> str:
        """The latest slot when it was skipped or missed: `skipped (overlap) at 2026-… UTC`."""
        if self.slot is None:
            return ""
        return f"{state_text(self.slot)} at {formats.moment(self.slot.slot_time, self.entry.timezone)}"

    @property
    def policy(self) -> str:
        words = ["waits for its previous run" if self.entry.without_overlapping else "may overlap"]
        if self.entry.catch_up == "latest":
            words.append("catches up once after a downtime")
        return "; ".join(words)


def entry_rows(schedule: Schedule, now: datetime | None = None) -> list[EntryRow]:
    """Every entry of the file with its next slot, its last runs and its pause (two index lookups an entry)."""
    now = now or datetime.now(timezone.utc)
    last = last_runs(schedule.entries)
    paused = pauses()
    return [EntryRow(entry, *last[entry.name], paused.get(entry.name), entry.next_slot(now) if entry.enabled else None)
            for entry in schedule.entries.values()]
