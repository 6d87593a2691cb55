"""The schedule file: its entries read and checked, and their triggers turned into slots."""
from __future__ import annotations

import hashlib
import inspect
import json
import re
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

from actors.runtime import TASKS
from core import formats
from core.config_files import FileProblems, find_file, read_toml
from core.errors import FleetError
from core.settings import get_settings, timezone_problem

SHIPPED = Path(__file__).resolve().parent / "shipped"  # the schedules Fleet ships (package data)
MISSED_LOOKBACK = timedelta(days=7)  # how far back a cron entry's missed slots are looked for
INTERVAL_ANCHOR = datetime(2000, 1, 1, tzinfo=timezone.utc)  # `every` slots: multiples since then
UTC = timezone.utc
TICK = timedelta(microseconds=1)
TRIGGERS = ("cron", "every", "daily_at", "weekly_on", "monthly_on", "twice_daily")
ENTRY_KEYS = {"task", "args", "timezone", "without_overlapping", "catch_up", "catch_up_window", "enabled", *TRIGGERS}
CATCH_UP = ("skip", "latest")
ENTRY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
MAX_INTERVAL = 366 * 86400  # seconds: `every` and `catch_up_window` at most a year
MAX_ARGUMENT = 1_000_000  # a number given to a task: hours, days, rows to keep …
WEEKDAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
UNIT_WORDS = {"s": "second", "m": "minute", "h": "hour", "d": "day"}
TYPE_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
              list: "a list", dict: "a table"}
CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


class ScheduleError(FileProblems):
    """An invalid schedule file: one line a problem, each naming the entry."""


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


class _Problem(Exception):
    pass


def schedule_path(value: str, setting: str | None = None) -> Path:
    """A path, or the name of a shipped schedule (`default`, `option1` …)."""
    return find_file(value, SHIPPED, "schedule file", ScheduleError, setting)


def load_schedule(value: str | Path | None = None, default_timezone: str | None = None) -> Schedule:
    """Read and check a schedule file (FLEET_SCHEDULE when None); ScheduleError lists every problem.

    Tasks are looked up in the registry: import `actors.all` first, so every domain registered its own.
    """
    settings = get_settings()
    path = (schedule_path(str(value)) if value is not None
            else schedule_path(settings.schedule, "FLEET_SCHEDULE"))
    raw = path.read_bytes()
    data = read_toml(path, ScheduleError)
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
    seconds = formats.parse_span(value)
    if not seconds:
        raise _Problem(f"{key}: {value!r} is not a duration such as \"10m\" (units s, m, h, d)")
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
