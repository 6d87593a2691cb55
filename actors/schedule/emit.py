"""Claiming and emitting slots: exactly once, whoever sends them, and the slots nobody sent."""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from dramatiq.broker import get_broker
from redis import RedisError

from actors.middleware.schedule import LOCK_OPTION, LOCK_TTL_QUEUED, RUN_OPTION, lock_holder, lock_key, run_lock
from actors.middleware.unique import DuplicateJob
from actors.runtime import TASKS
from actors.schedule.files import TICK, UTC, Entry, Schedule
from core.broker import FleetRedisBroker
from core.clock import fleet_datetime, fleet_utcnow
from core.errors import FleetError
from core.locks import acquire_all
from core.state import state_redis
from db.database import database
from db.models.schedule import ScheduleRun

log = logging.getLogger("fleet.schedule")

ORPHAN_CLAIM = timedelta(seconds=60)  # a claim never sent after this long: its scheduler died
SEND_TOKEN_PREFIX = "fleet:schedule:send:"  # + run id: taken by the one process that sends it
SEND_TOKEN_TTL = 600  # seconds, longer than a claim may still be sent
MISSED = "no scheduler emitted it in time"


@dataclass
class Due:
    entry: Entry
    slot: datetime  # aware UTC
    kind: str = "slot"  # slot | catch-up | manual
    detail: str | None = None


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def emit(dues: list[Due], claimed_by: str, paused: set[str] = frozenset()) -> dict[str, ScheduleRun]:
    """Claim each slot by inserting its row; send a message only for the rows this call inserted.

    One due slot an entry. Returns the rows this call claimed, by entry name, in their state:
    `emitted`, or `skipped` (paused, overlap, duplicate). A slot another process claimed first
    is left to it and not returned.
    """
    if not dues:
        return {}
    now = fleet_utcnow()
    messages = {}
    rows = []
    for due in dues:
        row = {"name": due.entry.name, "slot_time": _naive(due.slot), "kind": due.kind, "task": due.entry.task,
               "scheduler": claimed_by, "created_at": now, "detail": due.detail, "state": "claimed",
               "message_id": None}
        if due.entry.name in paused:
            row.update(state="skipped", detail="paused", finished_at=now)
        else:
            message = TASKS[due.entry.task].message_with_options(kwargs=due.entry.args)
            messages[due.entry.name] = message
            row["message_id"] = message.message_id
        rows.append(row)
    with database.atomic():
        inserted = list(ScheduleRun.insert_many([_with_every_column(r) for r in rows]).on_conflict_ignore()
                        .returning(ScheduleRun).execute())
    claimed = {row.name: row for row in inserted}
    return _dispatch(claimed, messages, {due.entry.name: due.entry for due in dues})


def _dispatch(claimed: dict[str, ScheduleRun], messages: dict, entries: dict[str, Entry]) -> dict[str, ScheduleRun]:
    """Lock, send and record the rows still `claimed`; an error before the send (the database
    gone) leaves them `claimed`, for `resend_unsent`."""
    broker = get_broker()
    to_send = {name: messages[name] for name, row in claimed.items() if row.state == "claimed"}
    try:
        _take_send_tokens(claimed, to_send)
        skipped = _take_locks(claimed, to_send, entries)
    except RedisError as exc:  # no lock, no send: the rows say so instead of staying `claimed`
        log.exception("could not lock scheduled tasks")
        skipped = {name: f"not sent: {type(exc).__name__}: {exc}"[:500] for name in to_send}
        to_send = {}
    sent, not_sent = _send(broker, claimed, to_send)
    skipped.update(not_sent)
    _record(claimed, sent, skipped)
    return claimed


def _with_every_column(row: dict) -> dict:
    # insert_many takes its columns from the first row: every row gets every column
    return {"finished_at": None, **row}


def _take_send_tokens(claimed: dict, to_send: dict) -> None:
    """Only the process that takes a claim's send token sends it: the claimer, or a leader
    sending what a failed tick left `claimed` (`resend_unsent`), never both."""
    client = state_redis()
    if client is None or not to_send:
        return
    names = list(to_send)
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.set(f"{SEND_TOKEN_PREFIX}{claimed[name].id}", 1, nx=True, ex=SEND_TOKEN_TTL)
        taken = pipe.execute()
    for name, ok in zip(names, taken):
        if not ok:
            del to_send[name]


def _take_locks(claimed: dict, to_send: dict, entries: dict[str, Entry]) -> dict[str, str]:
    """Lock the entries that must not overlap; those still held by a live run are skipped."""
    skipped = {}
    client = state_redis()
    locking = [name for name in to_send if entries[name].without_overlapping]
    if client is None or not locking:
        return skipped
    locks = {name: run_lock(client, lock_key(name), claimed[name].id, LOCK_TTL_QUEUED) for name in locking}
    taken = acquire_all(client, list(locks.values()))
    for name, ok in zip(locking, taken):
        if not ok:
            holder_id = lock_holder(client, lock_key(name))
            holder = _live(holder_id)
            if holder is not None:
                skipped[name] = f"overlap: run #{holder.id} is still {'running' if holder.state == 'running' else 'queued'}"
                del to_send[name]
                continue
            if holder_id is not None:
                run_lock(client, lock_key(name), holder_id).release()  # it outlived its run
            if not locks[name].acquire():
                skipped[name] = "overlap: another run took the entry just now"
                del to_send[name]
                continue
        to_send[name].options[LOCK_OPTION] = lock_key(name)
    return skipped


def _live(holder_id: int | None) -> ScheduleRun | None:
    """The run holding an entry's lock, unless the lock outlived it: a run that ended (its
    release was lost) or a claim whose scheduler died before sending it."""
    holder = ScheduleRun.get_or_none(ScheduleRun.id == holder_id) if holder_id else None
    if holder is None or holder.state in ScheduleRun.FINAL:
        return None
    if holder.state == "claimed" and fleet_utcnow() - holder.created_at > ORPHAN_CLAIM:
        return None
    return holder


def _send(broker, claimed: dict, to_send: dict) -> tuple[set[str], dict[str, str]]:
    """Enqueue the messages (one round trip on Redis); (names sent, names not sent with why)."""
    sent, not_sent = set(), {}
    for name, message in to_send.items():
        message.options[RUN_OPTION] = claimed[name].id
    batched = isinstance(broker, FleetRedisBroker)
    try:
        with broker.pipelined() if batched else contextlib.nullcontext():
            for name, message in to_send.items():
                try:
                    broker.enqueue(message)
                    sent.add(name)
                except DuplicateJob as dup:
                    not_sent[name] = f"duplicate: an identical job is already queued or running ({dup.existing_id})"
    except Exception as exc:
        log.exception("could not send scheduled tasks")
        # a batch goes in one round trip at the end: none of it is known to be sent
        lost = [n for n in to_send if n not in not_sent and (batched or n not in sent)]
        for name in lost:
            not_sent[name] = f"not sent: {type(exc).__name__}: {exc}"[:500]
        sent.difference_update(lost)
    for name in not_sent:
        _release_if_taken(name, claimed[name].id, to_send[name])
    return sent, not_sent


def _release_if_taken(name: str, run_id: int, message) -> None:
    client = state_redis()
    if client is not None and message.options.get(LOCK_OPTION):
        try:
            run_lock(client, lock_key(name), run_id).release()
        except Exception:
            log.warning("could not release the schedule lock; it expires on its own", exc_info=True)


def _record(claimed: dict, sent: set[str], skipped: dict[str, str]) -> None:
    now = fleet_utcnow()
    with database.atomic():
        if sent:
            ids = [claimed[name].id for name in sent]
            # a fast worker may have marked its row running already: only claimed rows change state,
            # and every sent row gets its emission time
            ScheduleRun.update(state="emitted", emitted_at=now).where(
                ScheduleRun.id.in_(ids) & (ScheduleRun.state == "claimed")).execute()
            ScheduleRun.update(emitted_at=now).where(ScheduleRun.id.in_(ids) & ScheduleRun.emitted_at.is_null()).execute()
        for name, why in skipped.items():
            ScheduleRun.update(state="skipped", detail=why, finished_at=now, message_id=None).where(
                (ScheduleRun.id == claimed[name].id) & (ScheduleRun.state == "claimed")).execute()
    for name in sent:
        claimed[name].state = "emitted"
    for name, why in skipped.items():
        claimed[name].state, claimed[name].detail = "skipped", why


def record_missed(missed: list[tuple[Entry, list[datetime], int, str]], claimed_by: str) -> None:
    """Slots not emitted, as (entry, its slots listed, how many in all, why); a slot someone
    did claim keeps its row."""
    now = fleet_utcnow()
    rows = []
    for entry, slots, total, why in missed:
        listed = [{"name": entry.name, "slot_time": _naive(s), "kind": "slot", "task": entry.task, "state": "missed",
                   "detail": why, "scheduler": claimed_by, "created_at": now}
                  for s in slots]
        if listed and total > len(slots):
            listed[0]["detail"] += f"; at least {total - len(slots)} earlier missed slot(s) are not listed"
        rows += listed
    if rows:
        with database.atomic():
            ScheduleRun.insert_many(rows).on_conflict_ignore().execute()


def resend_unsent(schedule: Schedule, window: timedelta) -> int:
    """Send the slots claimed in the last `window` but never sent: the tick that claimed them
    failed after its INSERT (the database went away), or their scheduler died between claim and
    send. A claim whose send token is taken was sent (or is being sent) by its claimer and is
    left to it. Returns how many were sent now."""
    if state_redis() is None:
        return 0
    rows = {row.name: row for row in ScheduleRun.select().where(
        (ScheduleRun.state == "claimed") & ScheduleRun.name.in_(schedule.enabled_names)
        & (ScheduleRun.slot_time >= _naive(fleet_datetime() - window)) & ScheduleRun.message_id.is_null(False))
        .order_by(ScheduleRun.slot_time)}  # the latest claim of an entry
    if not rows:
        return 0
    messages = {name: TASKS[row.task].message_with_options(kwargs=schedule.entries[name].args)
                .copy(message_id=row.message_id) for name, row in rows.items()}
    claimed = _dispatch(rows, messages, schedule.entries)
    sent = sorted(name for name, row in claimed.items() if row.state == "emitted")
    if sent:
        log.warning("sent slots that were claimed but not sent", extra={"entries": sent})
    return len(sent)


def run_now(entry: Entry, by: str) -> ScheduleRun:
    """Emit the entry now, outside its trigger; `skipped` (with why) when its previous run is
    still queued or running and the entry must not overlap."""
    now = fleet_datetime()
    for _ in range(3):  # a manual slot is the current microsecond: a collision just takes the next
        claimed = emit([Due(entry, now, "manual")], by)
        if entry.name in claimed:
            return claimed[entry.name]
        now += TICK
    raise FleetError(f"could not claim a slot for {entry.name}")
