"""Real `fleet scheduler` processes (with the test tasks registered), real workers, the test
Redis and the database (PostgreSQL when FLEET_TEST_POSTGRES_URL is set, else SQLite):
leaders SIGKILLed and SIGTERMed, overlapping runs, a worker killed mid-run, every scheduler
down over a slot, pause and resume across schedulers."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlparse

import pytest

from actors import schedule as sched
from actors.middleware.schedule import RENEWALS_A_LOCK, RUN_OPTION
from core.settings import get_settings
from core.state import state_redis
from db.models.schedule import ScheduleRun
from tests.conftest import POSTGRES_URL
from tests.helpers import REPO, wait_for
from tests.test_schedule import note_entry, queued_messages, rows, runs_noted, write

UTC = timezone.utc


@pytest.fixture
def shared_db(request, db):
    """The database every process shares: PostgreSQL when the tests have one, else the session's SQLite."""
    if not POSTGRES_URL:
        yield os.environ["DATABASE_URL"]
        return
    from db.database import database, open_database
    from db.migrate import migrate

    url = request.getfixturevalue("postgres_url")
    sqlite = database.obj
    pg = open_database(url)
    database.initialize(pg)
    try:
        migrate(pg)
        for table in pg.get_tables():  # as `db` empties the SQLite (the panel's tests add accounts)
            if table != "fleet_migration":
                pg.execute_sql(f'DELETE FROM "{table}"')
        yield url
    finally:
        pg.close_all()
        database.initialize(sqlite)


class Fleet:
    """Scheduler and worker processes on one schedule file (the test's `processes` stop them)."""

    def __init__(self, env: dict, processes):
        self.env = env
        self.processes = processes

    def scheduler(self, skew: float = 0, **env: str) -> subprocess.Popen:
        """A scheduler; with `skew`, its own clock that many seconds ahead (tests.skewed_clock)."""
        if skew:
            return self.processes.start(f"{skew:g}", "tests.fleet_with_test_tasks", "scheduler",
                                        module="tests.skewed_clock", env={**self.env, **env}, name="scheduler")
        return self.processes.start("scheduler", module="tests.fleet_with_test_tasks", env={**self.env, **env},
                                    name="scheduler")

    def worker(self) -> subprocess.Popen:
        return self.processes.worker("--processes", "1", "--threads", "4", "--queues", "tests", env=self.env)

    def command(self, *args: str) -> subprocess.CompletedProcess:
        """A `fleet` command that knows the test tasks."""
        return subprocess.run([sys.executable, "-m", "tests.fleet_with_test_tasks", *args], env=self.env, cwd=REPO,
                              capture_output=True, text=True, timeout=60)

    def leader(self) -> subprocess.Popen | None:
        current = sched.leader()
        pid = int(current.rsplit(":", 1)[1]) if current else None
        return next((p for p in self.processes.started if p.pid == pid and p.poll() is None), None)

    def wait_leader(self, not_this: subprocess.Popen | None = None, timeout: float = 30) -> subprocess.Popen:
        return wait_for(lambda: (lead := self.leader()) is not None and lead is not not_this and lead,
                        timeout=timeout, message="a new scheduler leader")

    def stop(self) -> None:
        self.processes.stop_all()


@pytest.fixture
def run_fleet(shared_db, broker, processes, tmp_path):
    def start(schedule_text: str, **env) -> Fleet:
        path = write(tmp_path, schedule_text)
        return Fleet(dict(os.environ, DATABASE_URL=shared_db, FLEET_SCHEDULE=str(path), **env), processes)

    return start


def emitted(name: str) -> list[ScheduleRun]:
    """The entry's rows that were sent (a row still `claimed` may yet be skipped)."""
    return [r for r in rows(name) if r.state in ("emitted", "running", "succeeded", "failed")]


def wall(slot: datetime) -> float:
    return slot.replace(tzinfo=UTC).timestamp()


def test_three_schedulers_leaders_killed_twice_and_stopped_once_emit_each_slot_once(run_fleet, broker):
    fleet_ = run_fleet(note_entry("tick", 'every = "1s"', "without_overlapping = false"))
    for _ in range(3):
        fleet_.scheduler()

    def emitted_since(count: int):
        return len(emitted("tick")) >= count

    first = fleet_.wait_leader()
    wait_for(lambda: emitted_since(3), message="first leader emits")
    for _ in range(2):  # SIGKILL the leader twice; a replacement process joins each time
        leader = fleet_.leader()
        before = len(emitted("tick"))
        leader.kill()
        leader.wait(5)
        fleet_.scheduler()
        fleet_.wait_leader(not_this=leader, timeout=20)
        wait_for(lambda before=before: emitted_since(before + 3), timeout=20, message="the new leader emits")

    leader = fleet_.leader()
    stopped_at = time.monotonic()
    leader.send_signal(signal.SIGTERM)
    assert leader.wait(5) == 0, "a SIGTERMed leader exits cleanly within 5 s"
    fleet_.wait_leader(not_this=leader, timeout=3)
    assert time.monotonic() - stopped_at < 5
    # run on for 10 s of slots after the last handover
    handed_over = datetime.now(UTC).replace(tzinfo=None)
    wait_for(lambda: (e := emitted("tick")) and (e[-1].slot_time - handed_over).total_seconds() >= 10,
             timeout=60, message="10 s of slots after the last handover")
    fleet_.stop()

    ledger = rows("tick")
    slots = [r.slot_time for r in ledger]
    assert len(slots) == len(set(slots))
    # every second from the first slot to the last has exactly one row, and none is missed: the
    # slots due while a killed leader's lease ran out were emitted late by the next leader
    assert [(b - a).total_seconds() for a, b in zip(slots, slots[1:])] == [1.0] * (len(slots) - 1)
    sent = ledger
    assert {r.state for r in sent} <= {"claimed", "emitted"}, [(r.slot_time, r.state, r.detail) for r in ledger]
    late = [r for r in sent if (r.detail or "").endswith("s late, within the grace")]
    assert len(late) >= 2, "each takeover after a SIGKILL emitted the slots due during it, late"
    assert len({r.scheduler for r in sent}) >= 4, "each leader emitted"
    assert first.pid in {int(r.scheduler.rsplit(":", 1)[1]) for r in sent}

    messages = queued_messages(broker)
    run_ids = [m.options[RUN_OPTION] for m in messages]
    assert len(run_ids) == len(set(run_ids)), "no slot sent twice"
    assert set(run_ids) <= {r.id for r in sent}
    # a row still `claimed` is one whose leader was killed between its claim and its send
    assert {r.id for r in sent if r.state == "emitted"} <= set(run_ids)
    assert sum(r.state == "claimed" for r in sent) <= 2


def test_schedulers_with_skewed_clocks_neither_miss_nor_fire_early_and_warn(run_fleet, tmp_path, admin_client):
    """A leader 20 s ahead takes over from a right one, then one 20 s behind from it (each one's
    own clock shifted by tests.skewed_clock): the slots go by Redis TIME, so none is missed, none is sent
    before it is due (the worker, whose clock is right, starts each run after its slot), and
    both say so in their logs and on the Health page."""
    fleet_ = run_fleet(note_entry("skew", 'every = "1s"', "without_overlapping = false"))
    fleet_.worker()
    right = fleet_.scheduler()
    assert fleet_.wait_leader() is right
    wait_for(lambda: len(emitted("skew")) >= 2, message="the right clock's leader emits")

    def emitted_by(proc) -> list[ScheduleRun]:
        return [r for r in emitted("skew") if r.scheduler.endswith(f":{proc.pid}")]

    def known(proc) -> bool:
        return any(s.id.endswith(f":{proc.pid}") for s in sched.schedulers())

    ahead = fleet_.scheduler(skew=20)
    wait_for(lambda: known(ahead), message="the scheduler 20 s ahead stands by")
    right.terminate()
    assert fleet_.wait_leader(not_this=right) is ahead
    wait_for(lambda: len(emitted_by(ahead)) >= 3, message="the leader 20 s ahead emits")
    behind = fleet_.scheduler(skew=-20)
    wait_for(lambda: known(behind), message="the scheduler 20 s behind stands by")
    health = wait_for(lambda: (page := admin_client.get("/admin/health/").text) and f":{behind.pid}" in page and page,
                      timeout=15, message="both skewed clocks on the Health page")
    # measured against Redis TIME over a round trip: 20 s give or take a tenth on a loaded machine
    assert re.search(rf":{ahead.pid} (19\.[89]|20\.[0-2]) s ahead", health), health
    assert re.search(rf":{behind.pid} (19\.[89]|20\.[0-2]) s behind", health), health
    ahead.terminate()
    assert fleet_.wait_leader(not_this=ahead) is behind
    wait_for(lambda: len(emitted_by(behind)) >= 3, message="the leader 20 s behind emits")
    wait_for(lambda: all(r.started_at for r in emitted("skew")[:-2]), message="the worker ran them")
    fleet_.stop()

    ledger = rows("skew")
    slots = [r.slot_time for r in ledger]
    assert [(b - a).total_seconds() for a, b in zip(slots, slots[1:])] == [1.0] * (len(slots) - 1), "none skipped"
    assert not [r for r in ledger if r.state == "missed"], [(r.slot_time, r.detail) for r in ledger]
    ran = [r for r in ledger if r.started_at]
    # the worker's start is by the fleet's clock as it measured it, within its round trip to Redis:
    # a run sent 20 s early would start 20 s before its slot, not a fraction of a second
    precision = timedelta(seconds=1)
    assert len(ran) >= 6 and all(r.started_at >= r.slot_time - precision for r in ran), "none sent before its slot"
    assert all(r.emitted_at >= r.slot_time for r in ledger if r.emitted_at), "the ledger says when, by the fleet's clock"
    logs = "".join(p.read_text() for p in tmp_path.glob("scheduler-*.log"))
    assert "this process's clock is 20.0 s ahead of the fleet's (Redis TIME)" in logs
    assert "this process's clock is 20.0 s behind the fleet's (Redis TIME)" in logs


@pytest.mark.skipif(not POSTGRES_URL, reason="FLEET_TEST_POSTGRES_URL is not set")
def test_a_leader_that_cannot_reach_the_database_lets_a_standby_lead(run_fleet, shared_db, tmp_path):
    """The leader's database login stops working (a rotated password, a pg_hba change) while
    its Redis lease keeps renewing: it steps down, and a standby that can work leads."""
    import psycopg2

    role = f"fleet_sched_{os.urandom(3).hex()}"
    admin = psycopg2.connect(shared_db)
    admin.autocommit = True
    cursor = admin.cursor()
    cursor.execute(f'CREATE ROLE "{role}" LOGIN')
    cursor.execute(f'GRANT ALL ON SCHEMA public TO "{role}"')
    cursor.execute(f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{role}"')
    cursor.execute(f'GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO "{role}"')
    try:
        fleet_ = run_fleet(note_entry("tick", 'every = "1s"', "without_overlapping = false"))
        netloc = urlparse(shared_db).netloc.split("@")[-1]
        doomed = fleet_.scheduler(DATABASE_URL=urlparse(shared_db)._replace(netloc=f"{role}@{netloc}").geturl())
        assert fleet_.wait_leader() is doomed
        wait_for(lambda: any(r.scheduler.endswith(f":{doomed.pid}") for r in emitted("tick")), message="it emits")
        standby = fleet_.scheduler()

        cursor.execute(f'ALTER ROLE "{role}" NOLOGIN')
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
        assert fleet_.wait_leader(not_this=doomed, timeout=30) is standby
        wait_for(lambda: any(r.scheduler.endswith(f":{standby.pid}") for r in emitted("tick")),
                 message="the standby emits")
        assert doomed.poll() is None, "it stands by; it did not crash"
        fleet_.stop()
        assert "scheduler stepped down after failing loops" in next(tmp_path.glob("scheduler-0.log")).read_text()
    finally:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
        cursor.execute(f'DROP OWNED BY "{role}"')
        cursor.execute(f'DROP ROLE "{role}"')
        admin.close()


def test_a_3_s_task_every_second_never_runs_twice_at_once_and_skipped_slots_are_recorded(run_fleet):
    fleet_ = run_fleet(note_entry("slow", 'every = "1s"').replace('key = "slow" }', 'key = "slow", seconds = 3 }'))
    fleet_.worker()
    fleet_.scheduler()
    fleet_.scheduler()
    wait_for(lambda: sum(r.state == "succeeded" for r in rows("slow")) >= 3, timeout=60, message="three runs done")
    fleet_.stop()

    runs = runs_noted("slow")
    assert len(runs) >= 3 and all(run["others"] == [] for run in runs), runs
    ledger = rows("slow")
    skipped = [r for r in ledger if r.state == "skipped"]
    assert skipped and all(r.detail.startswith("overlap: run #") for r in skipped)
    assert len(skipped) >= 2 * sum(r.state == "succeeded" for r in ledger) - 2
    for run in (r for r in ledger if r.state == "succeeded"):
        assert run.duration_seconds >= 3
    # while a run is in hand, every slot is skipped: run windows never contain another emission
    done = [r for r in ledger if r.state == "succeeded"]
    for a, b in zip(done, done[1:]):
        assert b.emitted_at >= a.finished_at - timedelta(seconds=0.5)


def test_a_worker_killed_mid_run_blocks_the_entry_no_longer_than_its_lock(run_fleet):
    fleet_ = run_fleet(note_entry("long", 'every = "1s"').replace('key = "long" }', 'key = "long", seconds = 6 }'))
    doomed = fleet_.worker()
    fleet_.scheduler()
    first = wait_for(lambda: next((r for r in rows("long") if r.state == "running"), None), timeout=30,
                     message="a run in hand")
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait(5)
    killed_at = time.time()
    fleet_.worker()
    ttl = get_settings().overlap_lock_ttl  # short in the tests (FLEET_OVERLAP_LOCK_TTL)

    later = wait_for(lambda: next((r for r in emitted("long") if r.slot_time > first.slot_time), None),
                     timeout=ttl + 30, message="a run after the killed one")
    # the lock was last renewed before the kill and expires its TTL later; a little
    # beyond that for the next 1 s slot and the leader's tick
    assert wall(later.slot_time) <= killed_at + ttl + 5
    between = [r for r in rows("long") if first.slot_time < r.slot_time < later.slot_time]
    assert between and all(r.state == "skipped" and r.detail.startswith("overlap") for r in between)
    assert wall(between[-1].slot_time) >= killed_at + ttl - ttl / RENEWALS_A_LOCK - 1, "held until it expired"
    wait_for(lambda: ScheduleRun.get_by_id(later.id).state == "succeeded", timeout=30, message="later run done")
    fleet_.stop()

    killed = runs_noted("long")[0]["token"]
    assert all(set(run["others"]) <= {killed} for run in runs_noted("long")), "only the dead run overlapped"
    # its worker died: the row says so until the message is redelivered (and then skipped, the entry being taken)
    assert ScheduleRun.get_by_id(first.id).state in ("running", "skipped")


def test_all_schedulers_down_over_a_slot_records_it_missed_and_catch_up_latest_emits_it_once(run_fleet, broker):
    fleet_ = run_fleet(note_entry("skipper", 'every = "8s"', "without_overlapping = false")
                       + note_entry("catcher", 'every = "8s"', 'catch_up = "latest"', "without_overlapping = false"),
                       FLEET_SCHEDULE_GRACE="1")
    scheduler = fleet_.scheduler()
    slot = wait_for(lambda: len(emitted("catcher")) >= 1 and len(emitted("skipper")) >= 1 and emitted("catcher")[0].slot_time,
                    timeout=30, message="both entries emitted once")
    scheduler.terminate()
    assert scheduler.wait(5) == 0
    down_over = slot + timedelta(seconds=8)  # the next slot, while no scheduler runs
    wait_for(lambda: time.time() > wall(down_over) + 1.5, timeout=20, message="the next slot passed, beyond the grace")
    fleet_.scheduler()
    wait_for(lambda: len(rows("catcher")) >= 2 and len(rows("skipper")) >= 2, timeout=30, message="the slot handled")
    fleet_.stop()

    skipper = {r.slot_time: r for r in rows("skipper")}
    catcher = {r.slot_time: r for r in rows("catcher")}
    assert skipper[down_over].state == "missed" and skipper[down_over].detail == "no scheduler emitted it in time"
    caught = catcher[down_over]
    assert (caught.state, caught.kind) == ("emitted", "catch-up") and caught.detail.endswith("late, on catch-up")
    run_ids = [m.options[RUN_OPTION] for m in queued_messages(broker)]
    assert run_ids.count(caught.id) == 1 and len(run_ids) == len(set(run_ids))
    assert sum(r.kind == "catch-up" for r in catcher.values()) == 1


def test_pause_and_resume_are_honoured_by_every_scheduler(run_fleet, broker):
    fleet_ = run_fleet(note_entry("naps", 'every = "1s"', "without_overlapping = false"))
    fleet_.scheduler()
    fleet_.scheduler()
    first = fleet_.wait_leader()
    wait_for(lambda: emitted("naps"), timeout=30, message="first emission")

    assert fleet_.command("schedule", "pause", "naps").returncode == 0
    wait_for(lambda: _paused_rows(first), timeout=10, message="the leader skips the paused entry")
    first.terminate()
    assert first.wait(5) == 0
    second = fleet_.wait_leader(not_this=first)
    wait_for(lambda: len(_paused_rows(second)) >= 2, timeout=20, message="the next leader skips it too")
    assert fleet_.command("schedule", "resume", "naps").returncode == 0
    resumed_at = datetime.now(UTC).replace(tzinfo=None)
    wait_for(lambda: any(r.slot_time > resumed_at for r in emitted("naps")), timeout=10, message="emitted again")
    fleet_.stop()

    pause = [r for r in rows("naps") if r.detail == "paused"]
    window = [r for r in rows("naps") if pause[0].slot_time <= r.slot_time <= pause[-1].slot_time]
    assert all(r.state == "skipped" for r in window), "nothing emitted while paused"
    assert {r.scheduler for r in pause} >= {_id(first), _id(second)}


def _id(proc) -> str:
    return next(r.scheduler for r in rows("naps") if r.scheduler.endswith(f":{proc.pid}"))


def _paused_rows(proc) -> list[ScheduleRun]:
    return [r for r in rows("naps") if r.detail == "paused" and r.scheduler.endswith(f":{proc.pid}")]


def test_the_dashboard_and_the_schedule_page_name_the_real_leader(run_fleet, admin_client):
    fleet_ = run_fleet(note_entry("idle", 'every = "1h"'))
    procs = [fleet_.scheduler(), fleet_.scheduler()]
    lead = fleet_.wait_leader()
    wait_for(lambda: len(sched.schedulers()) == 2, message="both schedulers' heartbeats")
    standby = next(p for p in procs if p is not lead)
    assert 0 < state_redis().pttl(sched.LEADER_KEY) <= get_settings().scheduler_lease * 1000, "a lease with a short TTL"
    leader_id = sched.leader()
    assert leader_id.endswith(f":{lead.pid}")
    assert f"leader: <code>{leader_id}</code>" in admin_client.get("/admin/").text
    page = admin_client.get("/admin/schedule/").text
    assert leader_id in page and f":{standby.pid}" in page and "standby" in page

    listed = fleet_.command("schedule", "list")
    assert f"Schedulers: leader {leader_id}" in listed.stdout and "They do not all run" not in listed.stdout
    schedule_file = Path(fleet_.env["FLEET_SCHEDULE"])
    schedule_file.write_text(schedule_file.read_text() + note_entry("new", 'every = "2h"'))
    listed = fleet_.command("schedule", "list")
    assert f"They do not all run {schedule_file} as it is now" in listed.stdout, listed.stdout
