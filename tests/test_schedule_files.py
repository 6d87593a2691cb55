"""Schedule files: the shipped ones and their fire times, triggers in every spelling, and the
one-line errors of an invalid file (`fleet schedule check`, `fleet scheduler`)."""
from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

import actors.all  # noqa: F401  (every domain registers its tasks)
from actors import schedule as sched
from tests.helpers import fleet

UTC = timezone.utc
MONDAY = datetime(2030, 1, 7, tzinfo=UTC)  # 2030-01-07 is a Monday
def fires(entry: sched.Entry, after: datetime, n: int = 3) -> list[datetime]:
    times, moment = [], after
    for _ in range(n):
        moment = entry.next_slot(moment)
        times.append(moment)
    return times


def at(day: str, clock: str, tz: str = "UTC") -> datetime:
    return datetime.fromisoformat(f"{day}T{clock}").replace(tzinfo=ZoneInfo(tz)).astimezone(UTC)


def write(tmp_path, text: str):
    path = tmp_path / "schedule.toml"
    path.write_text(text)
    return path


# -- the shipped files -------------------------------------------------------------------------

DAILY_IMPORTS = {"series-import-missing": "series.import-missing-data", "episodes-import-missing": "episodes.import-missing-data"}


def test_option1_imports_missing_data_daily_without_overlapping():
    schedule = sched.load_schedule("option1")
    assert {name: e.task for name, e in schedule.entries.items()} == DAILY_IMPORTS
    for entry in schedule.entries.values():
        assert entry.args == {} and entry.without_overlapping and entry.timezone == "UTC"
        assert entry.trigger_text == "daily at 00:00"
        assert fires(entry, MONDAY + timedelta(hours=5)) == [at("2030-01-08", "00:00"), at("2030-01-09", "00:00"),
                                                             at("2030-01-10", "00:00")]


def test_option2_daily_imports_weekly_series_and_monthly_episode_updates():
    schedule = sched.load_schedule("option2")
    e = schedule.entries
    assert list(e) == ["series-import-missing", "episodes-import-missing", "series-check-updates", "episodes-check-updates"]
    assert all(entry.without_overlapping for entry in e.values())
    assert fires(e["series-import-missing"], MONDAY, 2) == [at("2030-01-07", "02:00"), at("2030-01-08", "02:00")]
    assert fires(e["episodes-import-missing"], MONDAY, 2) == [at("2030-01-07", "03:00"), at("2030-01-08", "03:00")]
    checks = e["series-check-updates"]
    assert (checks.task, checks.args, checks.trigger_text) == ("series.check-data-updates", {"hours": 168},
                                                               "weekly on Monday at 04:00")
    assert fires(checks, MONDAY + timedelta(hours=5)) == [at("2030-01-14", "04:00"), at("2030-01-21", "04:00"),
                                                          at("2030-01-28", "04:00")]
    episodes = e["episodes-check-updates"]
    assert (episodes.task, episodes.args) == ("episodes.check-data-updates", {"hours": 720})
    assert fires(episodes, MONDAY) == [at("2030-02-01", "05:00"), at("2030-03-01", "05:00"), at("2030-04-01", "05:00")]


def test_option3_aggressive_updates_may_overlap():
    schedule = sched.load_schedule("option3")
    e = schedule.entries
    assert not any(entry.without_overlapping for entry in e.values())
    for name in DAILY_IMPORTS:
        assert fires(e[name], MONDAY + timedelta(hours=1), 2) == [at("2030-01-08", "00:00"), at("2030-01-09", "00:00")]
    assert (e["series-check-updates"].args, fires(e["series-check-updates"], MONDAY, 2)) == (
        {"hours": 24}, [at("2030-01-07", "04:00"), at("2030-01-08", "04:00")])
    assert e["episodes-check-updates"].args == {"hours": 48}
    assert fires(e["episodes-check-updates"], MONDAY, 4) == [at("2030-01-07", "01:00"), at("2030-01-07", "13:00"),
                                                             at("2030-01-08", "01:00"), at("2030-01-08", "13:00")]


def test_default_is_option2_plus_retries_cleanup_and_rescue():
    default, option2 = sched.load_schedule("default"), sched.load_schedule("option2")
    for name, entry in option2.entries.items():
        mine = default.entries[name]
        assert (mine.task, mine.args, mine.trigger_text, mine.without_overlapping) == (
            entry.task, entry.args, entry.trigger_text, entry.without_overlapping)
    assert default.entries["episodes-check-updates"].catch_up == "latest"
    retry = default.entries["retry-failed"]
    assert (retry.task, retry.args, retry.without_overlapping) == ("workouts.retry-failed", {"reset": True}, True)
    assert fires(retry, MONDAY, 2) == [at("2030-01-07", "03:00"), at("2030-01-08", "03:00")]
    cleanup = default.entries["jobs-cleanup"]
    assert (cleanup.task, cleanup.args, cleanup.trigger_text) == ("jobs.cleanup", {"days": 7, "keep": 100}, "daily at 00:30")
    rescue = default.entries["rescue-stale"]
    assert (rescue.task, rescue.args, rescue.trigger_text) == ("workouts.rescue-stale", {"hours": 2}, "every 10 minutes")
    assert fires(rescue, MONDAY + timedelta(minutes=3)) == [MONDAY + timedelta(minutes=m) for m in (10, 20, 30)]
    resume = default.entries["batches-resume"]
    assert (resume.task, resume.args, resume.trigger_text) == ("batches.resume-stale", {"minutes": 5}, "every 5 minutes")
    economy = default.entries["batches-economy-poll"]
    assert (economy.task, economy.args, economy.trigger_text) == ("batches.economy-poll", {}, "every minute")


def test_fleet_timezone_is_the_default_zone_of_the_shipped_files():
    schedule = sched.load_schedule("option2", default_timezone="Europe/Berlin")
    episodes = schedule.entries["episodes-check-updates"]
    assert episodes.timezone == "Europe/Berlin"
    assert fires(episodes, MONDAY, 1) == [at("2030-02-01", "05:00", "Europe/Berlin")]  # 04:00 UTC


def test_an_unknown_task_is_reported(tmp_path, fleet_env):
    path = write(tmp_path, '[sweep]\ntask = "series.sweep-everything"\ndaily_at = "02:00"\n')
    result = fleet("schedule", "check", str(path), env=fleet_env)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"fleet: {path}: [sweep] unknown task 'series.sweep-everything' (tasks: ")
    assert "jobs.cleanup" in result.stderr and len(result.stderr.splitlines()) == 1


# -- triggers --------------------------------------------------------------------------------

def one(tmp_path, trigger: str, *extra: str) -> sched.Entry:
    text = "\n".join(["[e]", 'task = "jobs.cleanup"', trigger, *extra]) + "\n"
    return sched.load_schedule(write(tmp_path, text)).entries["e"]


@pytest.mark.parametrize("cron, weekdays", [
    ("0 4 * * 1", ["Mon"]),  # crontab's Monday (APScheduler 3 alone would say Tuesday)
    ("0 4 * * 0", ["Sun"]),
    ("0 4 * * 7", ["Sun"]),
    ("0 4 * * 1-5", ["Mon", "Tue", "Wed", "Thu", "Fri"]),
    ("0 4 * * */2", ["Sun", "Tue", "Thu", "Sat"]),
    ("0 4 * * 5-7", ["Fri", "Sat", "Sun"]),
    ("0 4 * * sat,sun", ["Sat", "Sun"]),
])
def test_cron_weekdays_count_from_sunday_as_in_crontab(tmp_path, cron, weekdays):
    entry = one(tmp_path, f'cron = "{cron}"')
    week = fires(entry, MONDAY - timedelta(days=1), 7)
    assert {t.strftime("%a") for t in week if t < MONDAY + timedelta(days=6)} == set(weekdays)
    assert all(t.hour == 4 and t.minute == 0 for t in week)


@pytest.mark.parametrize("trigger, words, after, expected", [
    ('daily_at = "2:05"', "daily at 02:05", MONDAY, [at("2030-01-07", "02:05"), at("2030-01-08", "02:05")]),
    ('weekly_on = [0, "23:59"]', "weekly on Sunday at 23:59", MONDAY, [at("2030-01-13", "23:59"), at("2030-01-20", "23:59")]),
    ('monthly_on = [31, "00:00"]', "monthly on day 31 at 00:00", MONDAY, [at("2030-01-31", "00:00"), at("2030-03-31", "00:00")]),
    ('twice_daily = [1, 13]', "twice daily at 01:00 and 13:00", MONDAY, [at("2030-01-07", "01:00"), at("2030-01-07", "13:00")]),
    ('every = "1s"', "every second", MONDAY + timedelta(milliseconds=300),
     [MONDAY + timedelta(seconds=1), MONDAY + timedelta(seconds=2)]),
    ('every = "0h5m"', "every 5 minutes", MONDAY, [MONDAY + timedelta(minutes=5), MONDAY + timedelta(minutes=10)]),
    ('every = "1m60s"', "every 2 minutes", MONDAY, [MONDAY + timedelta(minutes=2), MONDAY + timedelta(minutes=4)]),
    ('every = "1h30m"', "every 90 minutes", MONDAY, [MONDAY + timedelta(minutes=90), MONDAY + timedelta(minutes=180)]),
    ('cron = "*/15 9-17 * * 1-5"', "cron */15 9-17 * * 1-5", MONDAY, [at("2030-01-07", "09:00"), at("2030-01-07", "09:15")]),
])
def test_triggers_and_their_words(tmp_path, trigger, words, after, expected):
    entry = one(tmp_path, trigger)
    assert entry.trigger_text == words
    assert fires(entry, after, 2) == expected


def test_every_slots_are_the_same_for_every_process_and_zone(tmp_path):
    """`every` counts from one fixed instant, so schedulers started at different times agree."""
    utc = one(tmp_path, 'every = "7m"')
    berlin = one(tmp_path, 'every = "7m"', 'timezone = "Europe/Berlin"')
    start = MONDAY + timedelta(seconds=12345.6)
    assert fires(utc, start, 5) == fires(berlin, start, 5)
    assert all((t - sched.INTERVAL_ANCHOR) % timedelta(minutes=7) == timedelta(0) for t in fires(utc, start, 5))


def test_an_entry_zone_follows_its_wall_clock_across_daylight_saving(tmp_path):
    entry = one(tmp_path, 'daily_at = "03:00"', 'timezone = "Europe/Berlin"')
    times = fires(entry, at("2030-03-29", "12:00"), 2)  # summer time starts on 2030-03-31
    assert [t.astimezone(ZoneInfo("Europe/Berlin")).hour for t in times] == [3, 3]
    assert [t.hour for t in times] == [2, 1]


def test_a_wall_clock_time_runs_once_when_the_clocks_go_back(tmp_path):
    """02:30 comes twice in Berlin on 2025-10-26 and not at all on 2025-03-30: once each day, as in cron."""
    entry = one(tmp_path, 'daily_at = "02:30"', 'timezone = "Europe/Berlin"')
    autumn = fires(entry, at("2025-10-25", "12:00"), 2)
    assert autumn == [at("2025-10-26", "00:30"), at("2025-10-27", "01:30")]  # 02:30 CEST, then 02:30 CET
    spring = fires(entry, at("2025-03-29", "12:00"), 2)
    assert spring == [at("2025-03-30", "01:30"), at("2025-03-31", "00:30")]  # 03:30 CEST (02:30 does not exist)
    every = one(tmp_path, 'every = "30m"', 'timezone = "Europe/Berlin"')  # not a wall-clock time: every slot
    assert len(fires(every, at("2025-10-25", "23:59"), 4)) == 4


def test_a_cron_restricting_day_and_weekday_fires_on_either_as_in_crontab(tmp_path):
    entry = one(tmp_path, 'cron = "0 4 1 * 1"')  # the 1st of the month, and every Monday
    days = [t.date().isoformat() for t in fires(entry, at("2030-01-01", "05:00"), 6)]
    assert days == ["2030-01-07", "2030-01-14", "2030-01-21", "2030-01-28", "2030-02-01", "2030-02-04"]


def test_defaults_of_an_entry(tmp_path):
    entry = one(tmp_path, 'every = "10m"')
    assert (entry.without_overlapping, entry.catch_up, entry.catch_up_window, entry.enabled, entry.timezone) == (
        True, "skip", 86_400, True, "UTC")
    zoned = sched.load_schedule(write(tmp_path, 'timezone = "Asia/Tokyo"\n[e]\ntask = "jobs.cleanup"\nevery = "1m"\n'))
    assert zoned.entries["e"].timezone == "Asia/Tokyo"


# -- invalid files -----------------------------------------------------------------------------

INVALID = [
    ('[e]\ntask = "nope.task"\nevery = "1s"\n', "[e] unknown task 'nope.task' (tasks: "),
    ('[e]\ntask = "jobs.cleanup"\ncron = "61 * * * *"\n', "[e] cron '61 * * * *': "),
    ('[e]\ntask = "jobs.cleanup"\ncron = "0 4 * *"\n', "[e] cron '0 4 * *': needs 5 fields (minute hour day month weekday), has 4"),
    ('[e]\ntask = "jobs.cleanup"\ncron = "0 4 * * 9"\n', "[e] weekday field '9': '9' is out of range (0-7, Sunday is 0 or 7)"),
    ('[e]\ntask = "jobs.cleanup"\nevery = "1s"\ntimezone = "Mars/Olympus"\n',
     "[e] unknown time zone 'Mars/Olympus' (an IANA name such as UTC or Europe/Berlin)"),
    ('timezone = "Nowhere/City"\n[e]\ntask = "jobs.cleanup"\nevery = "1s"\n', "timezone: unknown time zone 'Nowhere/City'"),
    ('[e]\ntask = "jobs.cleanup"\nargs = { dayz = 3 }\nevery = "1s"\n', "[e] unknown argument 'dayz' for jobs.cleanup (it takes: days, keep)"),
    ('[e]\ntask = "workouts.retry-failed"\nargs = { reset = "yes" }\nevery = "1s"\n',
     "[e] argument 'reset' of workouts.retry-failed must be true or false, not \"yes\""),
    ('[e]\ntask = "jobs.cleanup"\nargs = { keep = 1.5 }\nevery = "1s"\n', "[e] argument 'keep' of jobs.cleanup must be a whole number, not 1.5"),
    ('[e]\ntask = "jobs.cleanup"\nevery = "10 minutes"\n', "[e] every: '10 minutes' is not a duration such as \"10m\" (units s, m, h, d)"),
    ('[e]\ntask = "jobs.cleanup"\nevery = "0s"\n', "[e] every: '0s' is not a duration"),
    ('[e]\ntask = "jobs.cleanup"\n', "[e] needs exactly one trigger of cron, every, daily_at, weekly_on, monthly_on, twice_daily"),
    ('[e]\ntask = "jobs.cleanup"\nevery = "1s"\ndaily_at = "02:00"\n', "[e] needs exactly one trigger of cron, every, daily_at, weekly_on, monthly_on, twice_daily; has every, daily_at"),
    ('[e]\ntask = "jobs.cleanup"\ndaily_at = "25:00"\n', "[e] daily_at: '25:00' is not a time of day such as \"02:00\""),
    ('[e]\ntask = "jobs.cleanup"\nweekly_on = [8, "04:00"]\n', "[e] weekly_on: 8 is not a weekday"),
    ('[e]\ntask = "jobs.cleanup"\nmonthly_on = [0, "05:00"]\n', "[e] monthly_on: 0 is not a day of the month (1 … 31)"),
    ('[e]\ntask = "jobs.cleanup"\ntwice_daily = [1]\n', "[e] twice_daily must be [hour, hour] such as [1, 13]"),
    ('[e]\ntask = "jobs.cleanup"\nevery = "1s"\ncatch_up = "all"\n', "[e] catch_up must be \"skip\" or \"latest\", not 'all'"),
    ('[e]\ntask = "jobs.cleanup"\nevery = "1s"\nwithout_overlapping = "no"\n', "[e] without_overlapping must be true or false"),
    ('[e]\ntask = "jobs.cleanup"\nevery = "1s"\nretries = 3\n', "[e] unknown key 'retries' (keys: "),
    ('[e]\nevery = "1s"\n', "[e] needs task = \"domain.name\""),
    ('every = "1s"\n', "every: unknown setting (an entry is a table: [every])"),
    ("# nothing here\n", "no entries (an entry is a table such as [rescue-stale])"),
    ('[e\ntask = "x"\n', "not a valid TOML file: "),
    ('[e]\ntask = "jobs.cleanup"\nevery = "100000000d"\n', "[e] every: '100000000d' is longer than a year"),
    ('[e]\ntask = "jobs.cleanup"\nevery = "99999999999999999999d"\n', "[e] every: '99999999999999999999d' is longer"),
    ('[e]\ntask = "jobs.cleanup"\ncron = "0 0 31 2 *"\n', "[e] cron '0 0 31 2 *' never fires"),
    ('[e]\ntask = "jobs.cleanup"\nargs = { days = nan }\nevery = "1d"\n',
     "[e] argument 'days' of jobs.cleanup must be a number from 0 to 1,000,000, not nan"),
    ('[e]\ntask = "workouts.rescue-stale"\nargs = { hours = -1 }\nevery = "1d"\n',
     "[e] argument 'hours' of workouts.rescue-stale must be a number from 0 to 1,000,000, not -1"),
    ('["[/x]"]\ntask = "jobs.cleanup"\nevery = "1d"\n', "['[/x]'] an entry's name is letters, digits"),
    ('["a\\nb"]\ntask = "jobs.cleanup"\nevery = "1d"\n', "['a\\nb'] an entry's name is letters, digits"),
    ('[e]\ntask = "jobs.cleanup"\ntwice_daily = [13, 13]\n', "[e] twice_daily: two different hours, not 13 twice"),
    ('[timezone]\ntask = "jobs.cleanup"\nevery = "1d"\n', "timezone: is the file's time zone, as in timezone = \"UTC\""),
]


@pytest.mark.parametrize("text, problem", INVALID)
def test_invalid_files_name_the_entry_and_the_problem(tmp_path, text, problem):
    path = write(tmp_path, text)
    with pytest.raises(sched.ScheduleError) as caught:
        sched.load_schedule(path)
    assert len(caught.value.problems) == 1
    line = caught.value.problems[0]
    assert line.startswith(f"{path}: {problem}"), line
    assert caught.value.exit_code == 2 and "\n" not in line


def test_check_lists_every_problem_one_line_each_exit_2(tmp_path, fleet_env):
    path = write(tmp_path, '[a]\ntask = "nope.task"\nevery = "1s"\n'
                           '[b]\ntask = "jobs.cleanup"\ncron = "0 4 * * 1"\ntimezone = "Mars/Olympus"\n'
                           '[c]\ntask = "jobs.cleanup"\nevery = "1m"\n')
    result = fleet("schedule", "check", str(path), env=fleet_env)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and "Traceback" not in result.stderr
    assert lines[0].startswith(f"fleet: {path}: [a] unknown task 'nope.task'")
    assert lines[1] == f"fleet: {path}: [b] unknown time zone 'Mars/Olympus' (an IANA name such as UTC or Europe/Berlin)"


def test_check_of_a_valid_file_shows_each_next_run(tmp_path, fleet_env):
    path = write(tmp_path, '[nightly]\ntask = "jobs.cleanup"\nargs = { days = 3 }\ndaily_at = "02:00"\n')
    result = fleet("schedule", "check", str(path), env=fleet_env)
    assert result.returncode == 0, result.stderr
    assert "nightly" in result.stdout and "days=3" in result.stdout and "daily at 02:00" in result.stdout
    assert result.stdout.rstrip().endswith(f"{path}: 1 entry, all valid.")


def test_the_scheduler_refuses_an_invalid_file_the_same_way(tmp_path, fleet_env):
    path = write(tmp_path, '[b]\ntask = "jobs.cleanup"\ncron = "0 4 * * 1"\ntimezone = "Mars/Olympus"\n')
    result = fleet("scheduler", env=dict(fleet_env, FLEET_SCHEDULE=str(path)), timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == f"fleet: {path}: [b] unknown time zone 'Mars/Olympus' (an IANA name such as UTC or Europe/Berlin)"


@pytest.mark.parametrize("variable, value, message", [
    ("FLEET_SCHEDULE", "nightly-special", "fleet: FLEET_SCHEDULE: no schedule file 'nightly-special' "
                                          "(a path, or a shipped one: default, option1, option2, option3)"),
    ("FLEET_TIMEZONE", "Europe/Atlantis", "fleet: FLEET_TIMEZONE: unknown time zone 'Europe/Atlantis' "
                                          "(an IANA name such as UTC or Europe/Berlin)"),
    ("FLEET_SCHEDULE_GRACE", "0", "fleet: FLEET_SCHEDULE_GRACE: '0' must be at least 1"),
])
def test_bad_schedule_settings_are_one_line_exit_2(fleet_env, variable, value, message):
    for command in (["scheduler"], ["schedule", "check"]):
        result = fleet(*command, env=dict(fleet_env, **{variable: value}), timeout=30)
        assert (result.returncode, result.stderr.strip()) == (2, message), command


def test_a_shipped_schedule_is_found_by_name_or_path(fleet_env):
    assert sched.schedule_path("option1") == sched.SHIPPED / "option1.toml"
    assert sched.schedule_path(str(sched.SHIPPED / "option3.toml")) == sched.SHIPPED / "option3.toml"
    assert os.path.basename(sched.schedule_path("default")) == "default.toml"
    assert sched.schedule_path("option2.toml") == sched.SHIPPED / "option2.toml"
    with pytest.raises(sched.ScheduleError, match="is a directory, not a schedule file"):
        sched.schedule_path(str(sched.SHIPPED))
