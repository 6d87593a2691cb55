"""The schedule: periodic tasks read from a TOML file, each slot emitted exactly once, and the
ledger an operator reads. The scheduler daemon, `fleet schedule …` and the panel share it.

A file has a table per entry (its name), e.g.

    timezone = "UTC"                     # default for every entry (else FLEET_TIMEZONE)

    [episodes-check-updates]
    task = "episodes.check-data-updates" # a registered task (actors.runtime.task)
    args = { hours = 720 }               # its keyword parameters
    monthly_on = [1, "05:00"]            # or cron, every, daily_at, weekly_on, twice_daily
    catch_up = "latest"                  # skip | latest

Exactly once: emitting a slot first inserts its `schedule_runs` row, unique on (entry, slot
time); only the process whose INSERT created the row sends the message, with the row's id in
its options. A deposed leader, a Redis failover or a skewed clock can only lose that race.

Modules: `files` (reading and checking a file; the shipped files are in `shipped/`),
`members` (schedulers and their leader), `emit` (claim and send), `emitter` (the leader's
loop), `ledger` (what operators read and change), `rows` (the entries as
operators see them).
"""
from actors.schedule.emit import MISSED, ORPHAN_CLAIM, Due, emit, record_missed, resend_unsent, run_now
from actors.schedule.emitter import MISSED_ROWS, SlotEmitter
from actors.schedule.files import INTERVAL_ANCHOR, SHIPPED, Entry, Schedule, ScheduleError, load_schedule, schedule_path
from actors.schedule.ledger import (
                                    history,
                                    last_runs,
                                    operator_name,
                                    paused_names,
                                    pauses,
                                    prune,
                                    set_paused,
                                    state_text,
)
from actors.schedule.members import LEADER_KEY, MEMBERS_KEY, heartbeat, leader, scheduler_id, schedulers
from actors.schedule.rows import EntryRow, entry_rows

__all__ = [
    "Due", "Entry", "EntryRow", "INTERVAL_ANCHOR", "LEADER_KEY", "MEMBERS_KEY", "MISSED", "MISSED_ROWS",
    "ORPHAN_CLAIM", "SHIPPED", "Schedule", "ScheduleError", "SlotEmitter", "emit", "entry_rows", "heartbeat",
    "history", "last_runs", "leader", "load_schedule", "operator_name", "paused_names", "pauses", "prune", "record_missed",
    "resend_unsent", "run_now", "schedule_path", "scheduler_id", "schedulers", "set_paused", "state_text",
]
