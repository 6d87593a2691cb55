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
"""
from __future__ import annotations

import contextlib
import getpass
import hashlib
import inspect
import json
import logging
import os
import re
import socket
import time
import tomllib
import types
import typing
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from dramatiq.broker import get_broker
from peewee import fn
from redis import RedisError

from actors.middleware.schedule import (
    LOCK_OPTION,
    LOCK_TTL_QUEUED,
    RUN_OPTION,
    lock_holder,
    lock_key,
    release_lock,
    take_lock,
)
from actors.middleware.unique import DuplicateJob
from actors.runtime import TASKS
from core.broker import FleetRedisBroker
from core.errors import FleetError
from core.settings import get_settings, timezone_problem
from core.state import state_redis
from db.database import database
from db.models import utcnow
from db.models.schedule import SchedulePause, ScheduleRun

log = logging.getLogger("fleet.schedule")

SHIPPED = Path(__file__).resolve().parent.parent / "scheduler" / "schedules"
LEADER_KEY = "fleet:scheduler:leader"  # the leader's id, with a short TTL it renews
MEMBERS_KEY = "fleet:scheduler:members"  # every live scheduler's id -> its heartbeat (JSON)
MEMBER_STALE = 10  # seconds without a heartbeat (one a second) after which a scheduler is gone

MISSED_ROWS = 1_000  # at most this many missed slots of an entry are listed one by one
MISSED_LOOKBACK = timedelta(days=7)  # how far back a cron entry's missed slots are looked for
ORPHAN_CLAIM = timedelta(seconds=60)  # a claim never sent after this long: its scheduler died
SEND_TOKEN_PREFIX = "fleet:schedule:send:"  # + run id: taken by the one process that sends it
SEND_TOKEN_TTL = 600  # seconds, longer than a claim may still be sent
INTERVAL_ANCHOR = datetime(2000, 1, 1, tzinfo=timezone.utc)  # `every` slots: multiples since then

UTC = timezone.utc
TICK = timedelta(microseconds=1)


class ScheduleError(FleetError):
    """An invalid schedule file: one line a problem, each naming the entry."""

    exit_code = 2

    def __init__(self, problems: list[str]):
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        super().__init__(problems[0] + more)
        self.problems = problems


# -- the file ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    name: str
    task: str
    args: dict
    trigger: BaseTrigger = field(repr=False)
    trigger_text: str  # the trigger in words: "daily at 02:00"
    timezone: str
    without_overlapping: bool = True
    catch_up: str = "skip"
    catch_up_window: float = 86_400.0
    enabled: bool = True
    fixed_time: bool = False  # fires at set wall-clock times (not every n units): once when the clocks go back

    @property
    def args_text(self) -> str:
        return " ".join(f"{k}={json.dumps(v)}" for k, v in self.args.items())

    def next_slot(self, after: datetime) -> datetime | None:
        """The first slot strictly after `after` (aware), in UTC."""
        slot = self.trigger.get_next_fire_time(None, after.astimezone(UTC) + TICK)
        if slot is not None and self.fixed_time and self._repeated(slot):
            slot = self.trigger.get_next_fire_time(None, slot.astimezone(UTC) + TICK)
        return slot.astimezone(UTC) if slot else None

    def _repeated(self, slot: datetime) -> bool:
        """Whether `slot` is a wall-clock time coming round the second time as the clocks go
        back (02:30 twice in Berlin's last October night): it runs once, as in cron."""
        at = slot.astimezone(UTC)  # by way of UTC: the local time's fold is set right, comparisons are by instant
        local = at.astimezone(ZoneInfo(self.timezone))
        if not local.fold:
            return False
        first = local.replace(fold=0).astimezone(UTC)
        fires = self.trigger.get_next_fire_time(None, first)
        return first != at and fires is not None and fires.astimezone(UTC) == first

    def slots_between(self, after: datetime, until: datetime, limit: int) -> tuple[list[datetime], int]:
        """The latest `limit` slots in (after, until] and how many there are in all."""
        if isinstance(self.trigger, IntervalTrigger):  # arithmetic: a 1 s entry down for a day is 86,400 slots
            step = self.trigger.interval
            first = (after - INTERVAL_ANCHOR) // step + 1  # timedelta // timedelta floors, below zero too
            last = (until - INTERVAL_ANCHOR) // step
            total = max(0, last - first + 1)
            return [INTERVAL_ANCHOR + step * k for k in range(max(first, last - limit + 1), last + 1)], total
        latest: deque[datetime] = deque(maxlen=limit)
        total = 0
        lookback = max(MISSED_LOOKBACK, timedelta(seconds=self.catch_up_window))
        slot = self.next_slot(max(after, until - lookback))
        while slot is not None and slot <= until:
            latest.append(slot)
            total += 1
            slot = self.next_slot(slot)
        return list(latest), total


@dataclass(frozen=True)
class Schedule:
    path: Path
    entries: dict[str, Entry]
    digest: str  # of the file's bytes: schedulers on different files show it

    @property
    def enabled(self) -> list[Entry]:
        return [e for e in self.entries.values() if e.enabled]

    @property
    def enabled_names(self) -> list[str]:
        return [e.name for e in self.enabled]

    def entry(self, name: str) -> Entry:
        if name not in self.entries:
            known = ", ".join(self.entries) or "none"
            raise FleetError(f"no schedule entry named {name!r} in {self.path} (entries: {known})")
        return self.entries[name]


TRIGGERS = ("cron", "every", "daily_at", "weekly_on", "monthly_on", "twice_daily")
ENTRY_KEYS = {"task", "args", "timezone", "without_overlapping", "catch_up", "catch_up_window", "enabled", *TRIGGERS}
CATCH_UP = ("skip", "latest")
ENTRY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
MAX_INTERVAL = 366 * 86400  # seconds: `every` and `catch_up_window` at most a year
MAX_ARGUMENT = 1_000_000  # a number given to a task: hours, days, rows to keep …
WEEKDAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
UNIT_WORDS = {"s": "second", "m": "minute", "h": "hour", "d": "day"}


class _Problem(Exception):
    pass


def schedule_path(value: str, setting: str | None = None) -> Path:
    """A path, or the name of a shipped schedule (`default`, `option1` …)."""
    path = Path(value)
    if path.is_file():
        return path
    shipped = SHIPPED / (value if value.endswith(".toml") else f"{value}.toml")
    if "/" not in value and shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in SHIPPED.glob("*.toml")))
    what = "is a directory, not a schedule file" if path.is_dir() else "no schedule file"
    problem = (f"{value!r} {what}" if path.is_dir() else f"{what} {value!r}") + f" (a path, or a shipped one: {names})"
    raise ScheduleError([f"{setting}: {problem}" if setting else problem])


def load_schedule(value: str | Path | None = None, default_timezone: str | None = None) -> Schedule:
    """Read and check a schedule file (FLEET_SCHEDULE when None); ScheduleError lists every problem.

    Tasks are looked up in the registry: import `actors.all` first, so every domain registered its own.
    """
    settings = get_settings()
    path = (schedule_path(str(value)) if value is not None
            else schedule_path(settings.schedule, "FLEET_SCHEDULE"))
    raw = path.read_bytes()
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ScheduleError([f"{path}: not a valid TOML file: {exc}"]) from None
    problems: list[str] = []
    tz = data.pop("timezone", default_timezone or settings.timezone)
    try:
        if isinstance(tz, dict):
            raise _Problem("is the file's time zone, as in timezone = \"UTC\"; name the entry otherwise")
        tz = _zone(tz)
    except _Problem as exc:
        problems.append(f"{path}: timezone: {exc}")
        tz = "UTC"
    entries = {}
    for name, table in data.items():
        if not ENTRY_NAME.fullmatch(name):
            problems.append(f"{path}: [{name!r}] an entry's name is letters, digits, '-', '_' and '.' (at most 100)")
            continue
        if not isinstance(table, dict):
            problems.append(f"{path}: {name}: unknown setting (an entry is a table: [{name}])")
            continue
        try:
            entries[name] = _entry(name, table, tz)
        except _Problem as exc:
            problems.append(f"{path}: [{name}] {exc}")
    if not entries and not problems:
        problems.append(f"{path}: no entries (an entry is a table such as [rescue-stale])")
    if problems:
        raise ScheduleError(problems)
    return Schedule(path, entries, hashlib.sha1(raw).hexdigest()[:10])


def _entry(name: str, table: dict, default_tz: str) -> Entry:
    unknown = sorted(set(table) - ENTRY_KEYS)
    if unknown:
        raise _Problem(f"unknown key {unknown[0]!r} (keys: {', '.join(sorted(ENTRY_KEYS))})")
    task = table.get("task")
    if not isinstance(task, str):
        raise _Problem("needs task = \"domain.name\"")
    if task not in TASKS:
        raise _Problem(f"unknown task {task!r} (tasks: {', '.join(sorted(TASKS)) or 'none'})")
    args = table.get("args", {})
    if not isinstance(args, dict):
        raise _Problem("args must be a table, e.g. args = { hours = 168 }")
    _check_args(task, args)
    tz = _zone(table.get("timezone", default_tz))
    given = [key for key in TRIGGERS if key in table]
    if len(given) != 1:
        raise _Problem(f"needs exactly one trigger of {', '.join(TRIGGERS)}" + (f"; has {', '.join(given)}" if given else ""))
    trigger, words = _trigger(given[0], table[given[0]], tz)
    fixed_time = given[0] != "every" and (given[0] != "cron" or "*" not in table["cron"].split()[1])
    catch_up = table.get("catch_up", "skip")
    if catch_up not in CATCH_UP:
        raise _Problem(f"catch_up must be \"skip\" or \"latest\", not {catch_up!r}")
    window = table.get("catch_up_window", "1d")
    for key in ("without_overlapping", "enabled"):
        if not isinstance(table.get(key, True), bool):
            raise _Problem(f"{key} must be true or false")
    entry = Entry(name, task, dict(args), trigger, words, tz,
                  without_overlapping=table.get("without_overlapping", True), catch_up=catch_up,
                  catch_up_window=_seconds("catch_up_window", window), enabled=table.get("enabled", True),
                  fixed_time=fixed_time)
    if entry.next_slot(datetime.now(UTC)) is None:
        raise _Problem(f"{given[0]} {table[given[0]]!r} never fires")
    return entry


def _zone(value) -> str:
    problem = timezone_problem(value)
    if problem:
        raise _Problem(problem)
    return value


def _check_args(task: str, args: dict) -> None:
    """The arguments against the task actor's keyword parameters, their annotations and defaults."""
    fn_ = TASKS[task].fn
    params = {p.name: p for p in inspect.signature(fn_).parameters.values()
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    try:
        hints = typing.get_type_hints(fn_)
    except Exception:  # an annotation that does not resolve: the names are still checked
        hints = {}
    takes = ", ".join(params) or "no arguments"
    for key, value in args.items():
        if key not in params:
            raise _Problem(f"unknown argument {key!r} for {task} (it takes: {takes})")
        expected = _types(hints.get(key))
        if expected and not _is_a(value, expected):
            names = " or ".join(TYPE_WORDS[t] for t in expected)
            raise _Problem(f"argument {key!r} of {task} must be {names}, not {json.dumps(value, default=str)}")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not 0 <= value <= MAX_ARGUMENT:
            raise _Problem(f"argument {key!r} of {task} must be a number from 0 to {MAX_ARGUMENT:,}, not {value}")
    missing = [p for p in params.values() if p.default is p.empty and p.name not in args]
    if missing:
        raise _Problem(f"missing argument {missing[0].name!r} for {task}")


def _types(hint) -> tuple[type, ...]:
    """The plain types a hint allows (int | None -> (int,)); () when it cannot say."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    plain = tuple(t for t in options if t in (bool, int, float, str, list, dict))
    return plain if len(plain) == len([t for t in options if t is not type(None)]) else ()


TYPE_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
              list: "a list", dict: "a table"}


def _is_a(value, expected: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in expected
    if isinstance(value, int) and float in expected:
        return True
    return isinstance(value, expected)


def _time_of_day(key: str, value) -> tuple[int, int]:
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", value) if isinstance(value, str) else None
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise _Problem(f"{key}: {value!r} is not a time of day such as \"02:00\"")
    return int(match[1]), int(match[2])


def _seconds(key: str, value) -> float:
    parts = re.findall(r"(\d+)([smhd])", value) if isinstance(value, str) else []
    if not parts or "".join(n + u for n, u in parts) != value or not any(int(n) for n, _ in parts):
        raise _Problem(f"{key}: {value!r} is not a duration such as \"10m\" (units s, m, h, d)")
    seconds = sum(int(n) * UNITS[u] for n, u in parts)
    if seconds > MAX_INTERVAL:
        raise _Problem(f"{key}: {value!r} is longer than a year")
    return float(seconds)


def _pair(key: str, value, shape: str) -> list:
    if not isinstance(value, list) or len(value) != 2:
        raise _Problem(f"{key} must be {shape}")
    return value


def _trigger(key: str, value, tz: str) -> tuple[BaseTrigger, str]:
    if key == "cron":
        if not isinstance(value, str):
            raise _Problem("cron must be a string such as \"0 4 * * 1\"")
        fields = value.split()
        if len(fields) != 5:
            raise _Problem(f"cron {value!r}: needs 5 fields (minute hour day month weekday), has {len(fields)}")
        minute, hour, day, month, weekday = fields
        try:
            if day.startswith("*") or weekday.startswith("*"):
                trigger = CronTrigger(minute=minute, hour=hour, day=day, month=month,
                                      day_of_week=_cron_weekdays(weekday), timezone=tz)
            else:  # both restricted: crontab runs on either (the 1st *or* Mondays), not on both
                trigger = OrTrigger([
                    CronTrigger(minute=minute, hour=hour, day=day, month=month, timezone=tz),
                    CronTrigger(minute=minute, hour=hour, month=month, day_of_week=_cron_weekdays(weekday),
                                timezone=tz)])
        except ValueError as exc:
            raise _Problem(f"cron {value!r}: {exc}") from None
        return trigger, f"cron {value}"
    if key == "every":
        seconds = _seconds("every", value)
        unit = next(u for u in ("d", "h", "m", "s") if seconds % UNITS[u] == 0)
        n = int(seconds // UNITS[unit])
        words = f"every {UNIT_WORDS[unit]}" if n == 1 else f"every {n} {UNIT_WORDS[unit]}s"
        return IntervalTrigger(seconds=seconds, start_date=INTERVAL_ANCHOR, timezone=tz), words
    if key == "daily_at":
        hour, minute = _time_of_day(key, value)
        return CronTrigger(hour=hour, minute=minute, timezone=tz), f"daily at {hour:02d}:{minute:02d}"
    if key == "weekly_on":
        day, at = _pair(key, value, "[weekday, \"HH:MM\"] with 0 or 7 = Sunday, 1 = Monday …")
        if not isinstance(day, int) or isinstance(day, bool) or not 0 <= day <= 7:
            raise _Problem(f"weekly_on: {day!r} is not a weekday (0 or 7 = Sunday, 1 = Monday … 6 = Saturday)")
        hour, minute = _time_of_day(key, at)
        trigger = CronTrigger(day_of_week=_cron_weekdays(str(day)), hour=hour, minute=minute, timezone=tz)
        return trigger, f"weekly on {WEEKDAYS[day % 7]} at {hour:02d}:{minute:02d}"
    if key == "monthly_on":
        day, at = _pair(key, value, "[day of month, \"HH:MM\"]")
        if not isinstance(day, int) or isinstance(day, bool) or not 1 <= day <= 31:
            raise _Problem(f"monthly_on: {day!r} is not a day of the month (1 … 31)")
        hour, minute = _time_of_day(key, at)
        return CronTrigger(day=day, hour=hour, minute=minute, timezone=tz), f"monthly on day {day} at {hour:02d}:{minute:02d}"
    first, second = _pair(key, value, "[hour, hour] such as [1, 13]")
    for hour in (first, second):
        if not isinstance(hour, int) or isinstance(hour, bool) or not 0 <= hour <= 23:
            raise _Problem(f"twice_daily: {hour!r} is not an hour (0 … 23)")
    if first == second:
        raise _Problem(f"twice_daily: two different hours, not {first} twice (or daily_at = \"{first:02d}:00\")")
    return (CronTrigger(hour=f"{first},{second}", minute=0, timezone=tz),
            f"twice daily at {first:02d}:00 and {second:02d}:00")


CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _cron_weekdays(text: str) -> str:
    """A crontab weekday field (0 or 7 = Sunday) in the names APScheduler 3 reads: its own numbers
    start at Monday (APScheduler issue 286), so "0 4 * * 1" would otherwise run on Tuesdays."""
    if text == "*" or not re.search(r"\d", text):
        return text
    days: set[int] = set()
    for part in text.split(","):
        match = re.fullmatch(r"(\*|\d+)(?:-(\d+))?(?:/(\d+))?", part)
        if not match:
            raise _Problem(f"weekday field {text!r}: {part!r} is not a day, a range or a step")
        start, end, step = match[1], match[2], int(match[3] or 1)
        low, high = (0, 6) if start == "*" else (int(start), int(end) if end else int(start))
        if match[3] and start != "*" and not end:
            high = 6
        if not (0 <= low <= 7 and 0 <= high <= 7 and low <= high and step >= 1):
            raise _Problem(f"weekday field {text!r}: {part!r} is out of range (0-7, Sunday is 0 or 7)")
        days.update(d % 7 for d in range(low, high + 1, step))
    return ",".join(CRON_DAYS[d] for d in sorted(days))


# -- the schedulers ----------------------------------------------------------------------

@dataclass(frozen=True)
class SchedulerInfo:
    id: str
    leader: bool
    heartbeat_age: float  # seconds
    started_at: str
    schedule: str
    digest: str


def scheduler_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def leader() -> str | None:
    client = state_redis()
    value = client.get(LEADER_KEY) if client is not None else None
    return value.decode(errors="replace") if value else None


def heartbeat(client, info: dict) -> None:
    client.hset(MEMBERS_KEY, info["id"], json.dumps({**info, "heartbeat": time.time()}))


def schedulers() -> list[SchedulerInfo]:
    """Every scheduler with a recent heartbeat, the leader first; forgets those gone quiet."""
    client = state_redis()
    if client is None:
        return []
    current = leader()
    now = time.time()
    found, gone = [], []
    for key, value in client.hgetall(MEMBERS_KEY).items():
        info = json.loads(value)
        age = now - info["heartbeat"]
        if age > MEMBER_STALE:
            gone.append(key)
            continue
        found.append(SchedulerInfo(info["id"], info["id"] == current, max(0.0, age), info.get("started_at", ""),
                                   info.get("schedule", ""), info.get("digest", "")))
    if gone:
        client.hdel(MEMBERS_KEY, *gone)
    return sorted(found, key=lambda s: (not s.leader, s.id))


# -- claiming and emitting ---------------------------------------------------------------

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
    now = utcnow()
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
    with client.pipeline(transaction=False) as pipe:
        for name in locking:
            pipe.set(lock_key(name), claimed[name].id, nx=True, ex=LOCK_TTL_QUEUED)
        taken = pipe.execute()
    for name, ok in zip(locking, taken):
        run_id = claimed[name].id
        if not ok:
            holder_id = lock_holder(client, lock_key(name))
            if holder_id == run_id:  # taken for this run by a tick that failed before sending it
                to_send[name].options[LOCK_OPTION] = lock_key(name)
                continue
            holder = _live(holder_id)
            if holder is not None:
                skipped[name] = f"overlap: run #{holder.id} is still {'running' if holder.state == 'running' else 'queued'}"
                del to_send[name]
                continue
            if holder_id is not None:
                release_lock(client, lock_key(name), holder_id)  # it outlived its run
            if not take_lock(client, lock_key(name), run_id, LOCK_TTL_QUEUED):
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
    if holder.state == "claimed" and utcnow() - holder.created_at > ORPHAN_CLAIM:
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
            release_lock(client, lock_key(name), run_id)
        except Exception:
            log.warning("could not release the schedule lock; it expires on its own", exc_info=True)


def _record(claimed: dict, sent: set[str], skipped: dict[str, str]) -> None:
    now = utcnow()
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


MISSED = "no scheduler emitted it in time"
COALESCED = "a later slot came due with it, and only the latest due slot is emitted"


def record_missed(missed: list[tuple[Entry, list[datetime], int, str]], claimed_by: str) -> None:
    """Slots not emitted, as (entry, its slots listed, how many in all, why); a slot someone
    did claim keeps its row."""
    now = utcnow()
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
        & (ScheduleRun.slot_time >= _naive(datetime.now(UTC) - window)) & ScheduleRun.message_id.is_null(False))
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


def paused_names() -> set[str]:
    return set(pauses())


# -- the leader's emission loop ------------------------------------------------------------

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
                dues.append(Due(entry, latest, "catch-up", f"emitted {_words(late)} late, on catch-up"))
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


def _words(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# -- what operators do -----------------------------------------------------------------------

def operator_name() -> str:
    """Who runs a CLI command, for the ledger."""
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def run_now(entry: Entry, by: str) -> ScheduleRun:
    """Emit the entry now, outside its trigger; `skipped` (with why) when its previous run is
    still queued or running and the entry must not overlap."""
    now = datetime.now(UTC)
    for _ in range(3):  # a manual slot is the current microsecond: a collision just takes the next
        claimed = emit([Due(entry, now, "manual")], by)
        if entry.name in claimed:
            return claimed[entry.name]
        now += TICK
    raise FleetError(f"could not claim a slot for {entry.name}")


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


def local_time(moment: datetime | None, tz: str, empty: str = "") -> str:
    """A UTC time (naive from the ledger, or aware) in an entry's time zone."""
    if moment is None:
        return empty
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S %Z")


def history(name: str, limit: int = 20) -> list[ScheduleRun]:
    return list(ScheduleRun.select().where(ScheduleRun.name == name)
                .order_by(ScheduleRun.slot_time.desc()).limit(limit))


SENT = ("emitted", "running", "succeeded", "failed")


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


def state_text(run: ScheduleRun) -> str:
    """A row's state as an operator reads it: `failed (ERR_API_TIMEOUT)`, `skipped (overlap)`."""
    if run.state == "failed" and run.error_code:
        return f"failed ({run.error_code})"
    if run.state == "skipped" and run.detail:
        return f"skipped ({run.detail.split(':')[0]})"
    return run.state
