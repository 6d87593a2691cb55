"""The schedule domain in process: exactly-once claims (racing leaders, skewed clocks, on SQLite
and PostgreSQL), the ledger following each run's outcome, the overlap lock, missed slots and
catch-up, pause and run now, the CLI and the panel.

Real parts: the test Redis (broker, locks), the database, an in-process Dramatiq worker. The
leader's loop takes the time as an argument, so missed slots and catch-up are tested on a
calendar without waiting; tests/test_schedule_daemon.py runs real `fleet scheduler` processes.
"""
from __future__ import annotations

import dataclasses
import json
import re
import threading
from datetime import datetime, timedelta, timezone

import pytest
from dramatiq import Message

import tests.worker_actors  # noqa: F401  (registers the tests.* tasks on the broker)
from actors import schedule as sched
from actors.middleware.schedule import RUN_OPTION, lock_key
from core.settings import get_settings
from core.state import state_redis
from db.database import database, size_pool
from db.models import utcnow
from db.models.schedule import ScheduleRun
from tests.helpers import fleet, wait_for

UTC = timezone.utc
DAY1 = datetime(2030, 1, 7, tzinfo=UTC)  # a Monday


def write(tmp_path, text: str, name: str = "schedule.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def load(tmp_path, text: str) -> sched.Schedule:
    return sched.load_schedule(write(tmp_path, text))


def note_entry(name: str, trigger: str, *extra: str, key: str | None = None) -> str:
    """A schedule entry of the test task that notes its runs under `key`."""
    lines = [f"[{name}]", 'task = "tests.note"', f'args = {{ key = "{key or name}" }}', trigger, *extra]
    return "\n".join(lines) + "\n"


def rows(name: str | None = None) -> list[ScheduleRun]:
    query = ScheduleRun.select().order_by(ScheduleRun.slot_time)
    return list(query.where(ScheduleRun.name == name) if name else query)


def queued_messages(broker, queue: str = "tests") -> list[Message]:
    return [Message.decode(raw) for raw in broker.client.hvals(f"fleet:{queue}.msgs")]


def runs_noted(key: str) -> list[dict]:
    """What each run of the test task noted: its token, and the other runs in hand as it started."""
    return [json.loads(v) for v in state_redis().lrange(f"test:{key}:runs", 0, -1)]


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request, db):
    """The schedule tables, emptied, on the session's SQLite or a PostgreSQL database."""
    from db.database import database, open_database
    from db.migrate import migrate

    if request.param == "sqlite":
        yield "sqlite"
        return
    sqlite = database.obj
    pg = open_database(request.getfixturevalue("postgres_url"))
    database.initialize(pg)
    try:
        migrate(pg)
        for table in ("schedule_runs", "schedule_pauses"):
            pg.execute_sql(f'DELETE FROM "{table}"')
        yield "postgresql"
    finally:
        pg.close_all() if hasattr(pg, "close_all") else pg.close()
        database.initialize(sqlite)


# -- exactly once ------------------------------------------------------------------------------

def test_racing_leaders_with_skewed_clocks_emit_each_slot_once(ledger, broker, tmp_path):
    schedule = load(tmp_path, note_entry("fast", 'every = "1s"', "without_overlapping = false")
                    + note_entry("slow", 'every = "2s"', "without_overlapping = false"))
    skews = [0.0, 0.4, -0.4, 3.0]  # seconds each "host" is off
    emitters = [sched.SlotEmitter(schedule, f"host-{i}:1", grace=30) for i in range(len(skews))]
    for emitter in emitters:
        emitter.start(DAY1)
    barrier = threading.Barrier(len(emitters))
    errors = []

    def lead(emitter, skew):
        try:
            for step in range(1, 21):
                barrier.wait()
                emitter.tick(DAY1 + timedelta(seconds=step + skew))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            database.close()  # back to the pool: a thread that ends holding it would leak it

    # four schedulers in one process: a pool for their threads and this one (an in-process worker
    # of an earlier test sized it for its own threads)
    pool = database.obj
    sized = getattr(pool, "_max_connections", None)
    size_pool(max(sized or 0, len(emitters) + 1))
    threads = [threading.Thread(target=lead, args=(e, s)) for e, s in zip(emitters, skews)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        if sized is not None:
            size_pool(sized)
    assert not errors

    ledger_rows = rows()
    slots = [(r.name, r.slot_time) for r in ledger_rows]
    assert len(slots) == len(set(slots))
    emitted = {r.id: r for r in ledger_rows if r.state == "emitted"}
    messages = queued_messages(broker)
    run_ids = [m.options[RUN_OPTION] for m in messages]
    assert sorted(run_ids) == sorted(emitted), "one message per emitted row, none twice"
    assert {m.message_id for m in messages} == {r.message_id for r in emitted.values()}
    # every slot up to the last tick has its row: emitted, or missed while the skewed clock ran ahead
    fast = [r.slot_time for r in ledger_rows if r.name == "fast"]
    assert fast == [(DAY1 + timedelta(seconds=s)).replace(tzinfo=None) for s in range(1, 24)]
    assert {r.state for r in ledger_rows} <= {"emitted", "missed"}


def test_a_claim_inserts_once_and_only_its_inserter_sends(ledger, broker, tmp_path):
    schedule = load(tmp_path, note_entry("once", 'every = "1m"'))
    entry = schedule.entries["once"]
    slot = DAY1 + timedelta(minutes=5)
    first = sched.emit([sched.Due(entry, slot)], "host-a:1")
    second = sched.emit([sched.Due(entry, slot)], "host-b:2")
    assert first["once"].state == "emitted" and second == {}
    assert [m.options[RUN_OPTION] for m in queued_messages(broker)] == [first["once"].id]


def test_a_claim_left_unsent_is_sent_once_by_the_next_leader(ledger, broker, tmp_path):
    """A scheduler that died (or whose database went away) between its INSERT and its send left
    the row `claimed`: the next leader sends it, once, with the id the claim stored."""
    schedule = load(tmp_path, note_entry("orphan", 'cron = "0 0 1 1 *"'))  # no other slot comes due here
    now = datetime.now(UTC)
    left = ScheduleRun.create(name="orphan", slot_time=(now - timedelta(seconds=5)).replace(tzinfo=None),
                              task="tests.note", state="claimed", scheduler="dead-host:1",
                              message_id="0b5e1c1e-0000-4000-8000-000000000001")
    leaders = [sched.SlotEmitter(schedule, f"host-{i}:1", grace=30) for i in range(2)]
    for leader in leaders:
        leader.start(now)
        leader.tick(now)
    messages = queued_messages(broker)
    assert [(m.message_id, m.options[RUN_OPTION]) for m in messages] == [(left.message_id, left.id)]
    assert ScheduleRun.get_by_id(left.id).state == "emitted"
    assert state_redis().get(lock_key("orphan")) == str(left.id).encode()


def test_an_entry_whose_slots_are_older_than_any_look_back_is_taken_up_from_now(db, broker, tmp_path):
    schedule = load(tmp_path, note_entry("monthly", 'monthly_on = [1, "05:00"]'))
    emitter = sched.SlotEmitter(schedule, "host-a:1", grace=30)
    emitter.start(DAY1)
    emitter.cursors["monthly"] = datetime(2029, 11, 1, 5, tzinfo=UTC)  # its last slot, weeks before
    emitter.upcoming["monthly"] = datetime(2029, 12, 1, 5, tzinfo=UTC)
    later = DAY1 + timedelta(days=12)  # 2030-01-19: December's slot is older than the week looked back
    assert emitter.tick(later) == datetime(2030, 2, 1, 5, tzinfo=UTC), "the next slot, not one it keeps waking for"
    assert emitter.tick(later + timedelta(seconds=1)) == datetime(2030, 2, 1, 5, tzinfo=UTC)


def test_a_second_copy_of_a_run_that_ended_is_not_run(db, broker, worker, tmp_path):
    schedule = load(tmp_path, note_entry("twice", 'every = "1h"'))
    run = sched.run_now(schedule.entries["twice"], "ops")
    message = queued_messages(broker)[0]
    wait_for(lambda: ScheduleRun.get_by_id(run.id).state == "succeeded", message="the run done")
    broker.enqueue(message.copy(options={k: v for k, v in message.options.items() if k != "redis_message_id"}))
    wait_for(lambda: broker.client.hlen("fleet:tests.msgs") == 0, message="the copy handled")
    assert len(runs_noted("twice")) == 1
    assert ScheduleRun.get_by_id(run.id).state == "succeeded"


# -- the ledger follows the run ------------------------------------------------------------------

def test_ledger_follows_success_and_failure_and_the_lock_goes_with_the_run(db, broker, worker, tmp_path):
    schedule = load(tmp_path, note_entry("ok", 'every = "1h"') + note_entry("bad", 'every = "1h"')
                    .replace('key = "bad" }', 'key = "bad", fail = "ERR_BAD_REQUEST" }'))
    ok = sched.run_now(schedule.entries["ok"], "ops@example.com")
    bad = sched.run_now(schedule.entries["bad"], "ops@example.com")
    assert ok.state == bad.state == "emitted" and ok.kind == "manual"

    def finished():
        done = [r for r in rows() if r.state in ScheduleRun.FINAL]
        return done if len(done) == 2 else None

    done = wait_for(finished, message="both runs finished")
    by_name = {r.name: r for r in done}
    assert by_name["ok"].state == "succeeded" and by_name["ok"].error_code is None
    assert by_name["bad"].state == "failed" and by_name["bad"].error_code == "ERR_BAD_REQUEST"
    assert "planned failure" in by_name["bad"].detail
    for run in by_name.values():
        assert run.started_at and run.finished_at and run.duration_seconds is not None
    assert by_name["ok"].scheduler == "ops@example.com" and by_name["ok"].detail is None
    client = state_redis()
    assert not client.exists(lock_key("ok")) and not client.exists(lock_key("bad")), "released on both paths"
    assert runs_noted("ok") and runs_noted("bad")


def test_an_entry_never_overlaps_its_queued_run_and_runs_again_once_it_ended(db, broker, tmp_path):
    from tests.helpers import InProcessWorker

    schedule = load(tmp_path, note_entry("lonely", 'every = "1h"'))
    entry = schedule.entries["lonely"]
    first = sched.run_now(entry, "ops")
    second = sched.run_now(entry, "ops")
    assert first.state == "emitted"
    assert second.state == "skipped" and second.detail == f"overlap: run #{first.id} is still queued"
    assert state_redis().get(lock_key("lonely")) == str(first.id).encode()

    worker = InProcessWorker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        wait_for(lambda: ScheduleRun.get_by_id(first.id).state == "succeeded", message="first run done")
        wait_for(lambda: not state_redis().exists(lock_key("lonely")), message="lock released")
        third = sched.run_now(entry, "ops")
        assert third.state == "emitted"
        wait_for(lambda: ScheduleRun.get_by_id(third.id).state == "succeeded", message="third run done")
    finally:
        worker.stop()
    assert len(runs_noted("lonely")) == 2


def test_a_lock_that_outlived_its_run_or_its_scheduler_does_not_block(db, broker, tmp_path):
    schedule = load(tmp_path, note_entry("stuck", 'every = "1h"'))
    entry = schedule.entries["stuck"]
    client = state_redis()
    for holder in (
        ScheduleRun.create(name="stuck", slot_time=utcnow() - timedelta(hours=2), task="tests.note", state="succeeded"),
        # claimed by a scheduler that died before sending it
        ScheduleRun.create(name="stuck", slot_time=utcnow() - timedelta(hours=1), task="tests.note", state="claimed",
                           created_at=utcnow() - sched.ORPHAN_CLAIM - timedelta(seconds=1)),
    ):
        client.set(lock_key("stuck"), holder.id)
        run = sched.run_now(entry, "ops")
        assert run.state == "emitted", run.detail
        assert client.get(lock_key("stuck")) == str(run.id).encode()
        client.delete(lock_key("stuck"))


def test_a_redelivered_run_is_skipped_when_a_newer_run_holds_the_entry(db, broker, tmp_path):
    from tests.helpers import InProcessWorker

    schedule = load(tmp_path, note_entry("redelivered", 'every = "1h"'))
    old = sched.run_now(schedule.entries["redelivered"], "ops")
    # its worker died, the lock expired, and a newer run took the entry and is running
    newer = ScheduleRun.create(name="redelivered", slot_time=utcnow(), task="tests.note", state="running")
    state_redis().set(lock_key("redelivered"), newer.id)

    worker = InProcessWorker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        wait_for(lambda: ScheduleRun.get_by_id(old.id).state == "skipped", message="old run skipped")
    finally:
        worker.stop()
    assert runs_noted("redelivered") == [], "the task did not run a second time"
    assert f"run #{newer.id}" in ScheduleRun.get_by_id(old.id).detail
    assert state_redis().get(lock_key("redelivered")) == str(newer.id).encode(), "the newer run keeps its lock"


def test_the_lock_of_a_run_in_hand_has_a_short_renewed_ttl(db, broker, tmp_path):
    from tests.helpers import InProcessWorker

    schedule = load(tmp_path, note_entry("held", 'every = "1h"').replace('key = "held" }', 'key = "held", seconds = 2 }'))
    run = sched.run_now(schedule.entries["held"], "ops")
    client = state_redis()
    running_ttl = get_settings().overlap_lock_ttl
    assert client.ttl(lock_key("held")) > running_ttl  # queued: the long TTL
    worker = InProcessWorker(broker, worker_threads=1, worker_timeout=100)
    worker.start()
    try:
        wait_for(lambda: ScheduleRun.get_by_id(run.id).state == "running", message="run started")
        assert 0 < client.ttl(lock_key("held")) <= running_ttl
        wait_for(lambda: ScheduleRun.get_by_id(run.id).state == "succeeded", message="run done")
    finally:
        worker.stop()
    assert not client.exists(lock_key("held"))


# -- missed slots, catch-up, pause ------------------------------------------------------------------

def test_missed_slots_are_recorded_and_catch_up_latest_emits_the_latest_once(ledger, broker, tmp_path):
    schedule = load(tmp_path, note_entry("skipper", 'daily_at = "02:00"', "without_overlapping = false")
                    + note_entry("catcher", 'daily_at = "02:00"', 'catch_up = "latest"', 'catch_up_window = "6h"',
                                 "without_overlapping = false"))
    first = sched.SlotEmitter(schedule, "host-a:1", grace=30)
    first.start(DAY1 + timedelta(hours=1))
    first.tick(DAY1 + timedelta(hours=2, seconds=20))  # 20 s late: within the grace, emitted
    assert [r.state for r in rows()] == ["emitted", "emitted"]

    # every scheduler down from day 1 until day 3, 04:00; then two come back
    back = DAY1 + timedelta(days=2, hours=4)
    for host in ("host-b:2", "host-c:3"):
        emitter = sched.SlotEmitter(schedule, host, grace=30)
        emitter.start(back)
        emitter.tick(back)
    skipper = rows("skipper")
    assert [(r.slot_time.day, r.state) for r in skipper] == [(7, "emitted"), (8, "missed"), (9, "missed")]
    assert skipper[1].detail == "no scheduler emitted it in time"
    catcher = rows("catcher")
    assert [(r.slot_time.day, r.state, r.kind) for r in catcher] == [
        (7, "emitted", "slot"), (8, "missed", "slot"), (9, "emitted", "catch-up")]
    assert catcher[2].detail == "emitted 2.0 h late, on catch-up"
    assert len(queued_messages(broker)) == 3

    # back only after the catch-up window: missed too
    late = DAY1 + timedelta(days=3, hours=9)
    emitter = sched.SlotEmitter(schedule, "host-d:4", grace=30)
    emitter.start(late)
    emitter.tick(late)
    assert rows("catcher")[-1].state == "missed" and len(queued_messages(broker)) == 3


def test_a_long_outage_lists_the_latest_missed_slots_and_counts_the_rest(db, broker, tmp_path):
    schedule = load(tmp_path, note_entry("second", 'every = "1s"', "without_overlapping = false"))
    emitter = sched.SlotEmitter(schedule, "host-a:1", grace=30)
    emitter.start(DAY1)
    emitter.tick(DAY1 + timedelta(seconds=1))
    later = sched.SlotEmitter(schedule, "host-a:2", grace=30)
    later.start(DAY1 + timedelta(days=1))
    later.tick(DAY1 + timedelta(days=1))
    missed = [r for r in rows("second") if r.state == "missed"]
    # the 31 slots of the last 30 s are within the grace: emitted late, each once, not missed
    assert len(missed) == sched.MISSED_ROWS + 1 - 31
    assert missed[0].detail.endswith(f"at least {86_400 - 2 - sched.MISSED_ROWS} earlier missed slot(s) are not listed")
    assert {r.detail for r in missed[1:]} == {sched.MISSED}
    late = [r for r in rows("second") if r.slot_time > missed[-1].slot_time]
    assert [r.state for r in late] == ["emitted"] * 31
    assert late[0].detail == "emitted 30.0 s late, within the grace" and late[-1].detail is None


def test_a_paused_entry_is_skipped_by_any_scheduler_until_resumed(db, broker, tmp_path):
    schedule = load(tmp_path, note_entry("napping", 'every = "1m"', "without_overlapping = false"))
    leaders = [sched.SlotEmitter(schedule, f"host-{i}:1", grace=30) for i in range(2)]
    for leader in leaders:
        leader.start(DAY1)
    sched.set_paused("napping", True, "ops@example.com")
    leaders[0].tick(DAY1 + timedelta(minutes=1))
    leaders[1].tick(DAY1 + timedelta(minutes=2))
    sched.set_paused("napping", False, "ops@example.com")
    leaders[0].tick(DAY1 + timedelta(minutes=3))
    assert [(r.state, r.detail) for r in rows()] == [("skipped", "paused"), ("skipped", "paused"), ("emitted", None)]
    assert sched.pauses() == {}


# -- the CLI -----------------------------------------------------------------------------------------

@pytest.fixture
def cli_env(db, broker, tmp_path):
    import os

    path = write(tmp_path, '[nightly]\ntask = "jobs.cleanup"\nargs = { days = 30 }\ndaily_at = "03:00"\n'
                           '[often]\ntask = "workouts.rescue-stale"\nevery = "10m"\n')
    return dict(os.environ, FLEET_SCHEDULE=str(path), PYTHONUNBUFFERED="1"), path


def test_cli_list_run_pause_resume_history(cli_env):
    env, path = cli_env
    listed = fleet("schedule", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "nightly" in listed.stdout and "daily at 03:00" in listed.stdout and "every 10 minutes" in listed.stdout
    assert "Schedulers: none running" in listed.stdout

    ran = fleet("schedule", "run", "nightly", env=env)
    assert ran.returncode == 0, ran.stderr
    run = rows("nightly")[0]
    assert ran.stdout.strip() == f"Emitted nightly (jobs.cleanup) now: run #{run.id}, message {run.message_id}."
    again = fleet("schedule", "run", "nightly", env=env)
    assert again.returncode == 1
    assert again.stderr.strip() == f"fleet: nightly not run: overlap: run #{run.id} is still queued"

    paused = fleet("schedule", "pause", "often", env=env)
    assert paused.returncode == 0 and "Paused often" in paused.stdout
    assert fleet("schedule", "pause", "often", env=env).stdout.strip() == "often is paused already."
    assert "PAUSED" in fleet("schedule", "list", env=env).stdout
    resumed = fleet("schedule", "resume", "often", env=env)
    assert resumed.returncode == 0 and "Resumed often; next run" in resumed.stdout
    assert fleet("schedule", "resume", "often", env=env).stdout.strip() == "often is not paused."

    history = fleet("schedule", "history", "nightly", "--limit", "5", env=env)
    assert history.returncode == 0
    assert f"#{run.id}" in history.stdout and "skipped (overlap)" in history.stdout and "manual" in history.stdout


def test_cli_unknown_entry_is_one_line_exit_1(cli_env):
    env, path = cli_env
    for command in ("run", "pause", "resume", "history"):
        result = fleet("schedule", command, "nope", env=env)
        assert result.returncode == 1, command
        assert result.stderr.strip() == f"fleet: no schedule entry named 'nope' in {path} (entries: nightly, often)"


# -- the panel ------------------------------------------------------------------------------------

@pytest.fixture
def panel_schedule(monkeypatch, settings, tmp_path):
    path = write(tmp_path, note_entry("nightly", 'daily_at = "03:00"', 'timezone = "Europe/Berlin"')
                 + note_entry("often", 'every = "10m"', 'catch_up = "latest"'))
    monkeypatch.setattr("core.settings._current", dataclasses.replace(settings, schedule=str(path)))
    return path


def test_panel_shows_entries_schedulers_and_acts_for_admins(panel_schedule, admin_client, broker):
    from tests.panel import csrf_token

    state_redis().set(sched.LEADER_KEY, "host-1:4242")
    sched.heartbeat(state_redis(), {"id": "host-1:4242", "started_at": "2030-01-01T00:00:00+00:00",
                                    "schedule": str(panel_schedule), "digest": "abc"})
    sched.heartbeat(state_redis(), {"id": "host-2:77", "started_at": "2030-01-01T00:00:00+00:00",
                                    "schedule": str(panel_schedule), "digest": "abc"})
    page = admin_client.get("/admin/schedule/").text
    assert "host-1:4242" in page and "leader" in page and "host-2:77" in page and "standby" in page
    assert "daily at 03:00" in page and "Europe/Berlin" in page and "CET" in page
    assert "Run now" in page and "Pause" in page
    assert "The schedule file changed since the schedulers started" in page  # they read digest "abc"

    token = csrf_token(admin_client, "/admin/schedule/")
    ran = admin_client.post("/admin/schedule/action/", data={"entry": "nightly", "action": "run", "csrf_token": token},
                            follow_redirects=True)
    run = rows("nightly")[0]
    assert f"Emitted nightly now (run #{run.id})." in ran.text and run.scheduler == "admin@example.com"
    again = admin_client.post("/admin/schedule/action/", data={"entry": "nightly", "action": "run", "csrf_token": token},
                              follow_redirects=True)
    assert f"nightly not run: overlap: run #{run.id} is still queued" in again.text

    paused = admin_client.post("/admin/schedule/action/", data={"entry": "often", "action": "pause", "csrf_token": token},
                               follow_redirects=True)
    assert "Paused often" in paused.text and "by admin@example.com" in paused.text and "Resume" in paused.text
    paused_history = admin_client.get("/admin/schedule/history/?entry=often").text
    assert ">Resume</button>" in paused_history and ">Pause</button>" not in paused_history
    assert "by admin@example.com: every scheduler skips its slots" in paused_history
    admin_client.post("/admin/schedule/action/", data={"entry": "often", "action": "resume", "csrf_token": token})
    assert sched.pauses() == {}

    history = admin_client.get("/admin/schedule/history/?entry=nightly").text
    assert f"#{run.id}" in history and "skipped (overlap)" in history and "job log" in history
    assert admin_client.post("/admin/schedule/action/", data={"entry": "nightly", "action": "run"}).status_code == 400


def test_panel_for_viewers_bad_input_and_an_invalid_file(panel_schedule, viewer_client, admin_client, broker):
    from tests.panel import csrf_token

    page = viewer_client.get("/admin/schedule/")
    assert page.status_code == 200 and "nightly" in page.text and "Run now" not in page.text
    assert "No scheduler is running" in page.text
    forged = viewer_client.post("/admin/schedule/action/", data={"entry": "nightly", "action": "run",
                                                                 "csrf_token": csrf_token(viewer_client, "/admin/schedule/")})
    assert forged.status_code == 403 and rows() == []

    assert admin_client.get("/admin/schedule/history/?entry=%3Cscript%3E").status_code == 404
    token = csrf_token(admin_client, "/admin/schedule/")
    odd = admin_client.post("/admin/schedule/action/", data={"entry": "<script>x</script>", "action": "run",
                                                             "csrf_token": token}, follow_redirects=True)
    assert odd.status_code == 200 and "No schedule entry named &lt;script&gt;x&lt;/script&gt;." in odd.text
    odd = admin_client.post("/admin/schedule/action/", data={"entry": "often", "action": "explode",
                                                             "csrf_token": token}, follow_redirects=True)
    assert odd.status_code == 200 and "Unknown action" in odd.text

    panel_schedule.write_text(note_entry("broken", 'cron = "<b>bad</b> * * * *"'))
    page = admin_client.get("/admin/schedule/")
    assert page.status_code == 200 and "The schedule file is invalid" in page.text
    assert "&lt;b&gt;bad&lt;/b&gt;" in page.text and "<b>bad</b>" not in page.text


# -- the shipped tasks -----------------------------------------------------------------------------

def test_the_shipped_tasks_do_what_their_commands_do(db, broker, tmp_path):
    from db.models.jobs import JobLog
    from db.models.workouts import Plan, User, WorkoutPlan
    from tests.helpers import InProcessWorker

    user = User.create(email="u@example.com")
    failed = Plan.create(user=user, goal="strength", days=2)
    for day in (1, 2):
        WorkoutPlan.create(plan=failed, day=day, status="failed", error_code="ERR_API_TIMEOUT")
    stale = Plan.create(user=user, goal="run", days=1)
    WorkoutPlan.create(plan=stale, day=1, status="pending", updated_at=utcnow() - timedelta(hours=5))
    old = utcnow() - timedelta(days=30)
    for n in range(5):
        JobLog.create(run_id=f"r{n}", job_class="x", message_id=f"m{n}", queue="q", status="success", created_at=old)

    schedule = load(tmp_path, '[reset]\ntask = "workouts.retry-failed"\nargs = { reset = true }\ndaily_at = "03:00"\n'
                              '[rescue]\ntask = "workouts.rescue-stale"\nargs = { hours = 2 }\nevery = "10m"\n'
                              '[cleanup]\ntask = "jobs.cleanup"\nargs = { days = 7, keep = 2 }\ndaily_at = "00:30"\n')
    worker = InProcessWorker(broker, worker_threads=1, worker_timeout=100, queues={"maintenance"})
    worker.start()
    try:
        runs = [sched.run_now(entry, "ops") for entry in schedule.entries.values()]
        wait_for(lambda: all(ScheduleRun.get_by_id(r.id).state == "succeeded" for r in runs), message="three tasks done")
    finally:
        worker.stop()
    assert {w.status for w in WorkoutPlan.select().where(WorkoutPlan.plan == failed)} == {"pending"}
    dispatched = [list(m.args) for m in queued_messages(broker, "workouts")]
    assert dispatched == [[user.id, stale.id]], "reset only, no job for the failed plan; one for the stale plan"
    assert JobLog.select().where(JobLog.job_class == "x").count() == 2


def test_the_ledger_is_pruned_past_its_retention_but_keeps_each_entrys_latest(ledger, tmp_path):
    """`alerts-evaluate` alone adds 2,880 rows a day: `fleet jobs cleanup` (and the daily
    `jobs.cleanup`) deletes those older than FLEET_SCHEDULE_KEEP_DAYS (30)."""
    now = utcnow().replace(microsecond=0)

    def row(name: str, age: timedelta, state: str) -> dict:
        return {"name": name, "slot_time": now - age, "kind": "slot", "task": "tests.note", "state": state,
                "scheduler": "host-a:1", "created_at": now - age}

    old = [row("often-pruned", timedelta(days=31, seconds=30 * i), "succeeded") for i in range(120)]
    recent = [row("often-pruned", timedelta(days=29, seconds=30 * i), "succeeded") for i in range(20)]
    # an entry that last ran (and last missed) long ago keeps both those rows, where a leader takes it up
    rare = [row("rare-pruned", timedelta(days=400), "succeeded"), row("rare-pruned", timedelta(days=300), "succeeded"),
            row("rare-pruned", timedelta(days=200), "missed")]
    ScheduleRun.insert_many(old + recent + rare).execute()

    if ledger == "sqlite":  # the command, on the session's database
        done = fleet("jobs", "cleanup")
        assert done.returncode == 0, done.stderr
        said = re.search(r"Deleted (\d+) schedule ledger row\(s\) older than 30 day\(s\) \(FLEET_SCHEDULE_KEEP_DAYS\); "
                         r"kept each entry's latest\.", done.stdout)
        assert said and int(said.group(1)) >= 121, done.stdout  # the session's database may hold others
    else:
        assert sched.prune(get_settings().schedule_keep_days) == 121
    assert len(rows("often-pruned")) == 20
    assert [(r.slot_time, r.state) for r in rows("rare-pruned")] == [
        (now - timedelta(days=300), "succeeded"), (now - timedelta(days=200), "missed")]
    assert sched.prune(1) == 20 - 1 and [r.slot_time for r in rows("often-pruned")] == [now - timedelta(days=29)]
