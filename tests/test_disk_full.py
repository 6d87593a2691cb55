"""A full disk under a real `fleet worker`: FLEET_VAR_DIR (the workers' memory-mapped metrics
files) or the SQLite database on a small tmpfs, filled with a file while jobs run, then freed.
No process dies, nothing spends its retry budget, every day is generated."""
from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess

import psutil

from core import dead_letters
from db.database import open_database
from db.models.jobs import JobLog
from db.models.workouts import WorkoutPlan
from tests.helpers import fleet, migrated, tmpfs, wait_for


def fill(directory) -> None:
    """Write a file until the file system has no byte left."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 16, 4096, 512, 1):  # the last partial blocks too
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


def start_fleet_worker(processes, log_path, env) -> subprocess.Popen:
    with open(log_path, "w") as log:
        return processes.start("worker", "-p", "2", "-t", "2", env=env, stdout=log, stderr=subprocess.STDOUT)


def tree(proc) -> set[int]:
    """Dramatiq's main process and its worker processes (their pids; all must stay the same)."""
    main = psutil.Process(proc.pid)
    return {main.pid, *(p.pid for p in main.children(recursive=True) if "dramatiq" in " ".join(p.cmdline()))}


def create_plans(env, plans: int, days: int = 3) -> None:
    user = fleet("workouts", "add-user", f"u{os.urandom(4).hex()}@example.com", env=env)
    assert user.returncode == 0, user.stderr
    user_id = re.search(r"User #(\d+)", user.stdout).group(1)
    for _ in range(plans):
        created = fleet("workouts", "create-plan", "--user", user_id, "--days", str(days), "--goal", "strength", env=env)
        assert created.returncode == 0, created.stderr


def generated(url: str) -> int:
    db = open_database(url)
    try:
        with WorkoutPlan.bind_ctx(db), db.connection_context():
            return WorkoutPlan.select().where(WorkoutPlan.status == "generated").count()
    finally:
        db.close_all()


def most_deferrals(broker) -> int:
    """The most times a queued job was deferred (its options, in Redis)."""
    from dramatiq import Message

    client, most = broker.client, 0
    for key in client.scan_iter("fleet:*.msgs"):
        for data in client.hvals(key):
            message = Message.decode(data)
            assert message.options.get("retries", 0) == 0, message.options  # no retry spent
            most = max(most, message.options.get("deferrals", 0))
    return most


def log_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def test_a_full_var_dir_pauses_metrics_and_kills_no_worker(fleet_env, broker, openai_sim, processes, tmp_path):
    """Counting metrics on a full disk neither faults (SIGBUS) nor stops a worker process: counting
    pauses with a warning and resumes by itself when space returns."""
    var = tmp_path / "var"
    env = dict(fleet_env, FLEET_LOG_FORMAT="json")
    migrated(env["DATABASE_URL"])
    with tmpfs(var, "1m"):
        fill(var)
        proc = start_fleet_worker(processes, tmp_path / "worker.log", env)
        try:
            wait_for(lambda: len(tree(proc)) == 3, timeout=30, message="Dramatiq's main and two worker processes")
            pids = tree(proc)
            create_plans(env, 4)
            wait_for(lambda: generated(env["DATABASE_URL"]) == 12, timeout=60, message="12 days on a full disk")
            assert proc.poll() is None and tree(proc) == pids
            messages = [line["msg"] for line in log_lines(tmp_path / "worker.log")]
            assert any(m.startswith("metrics paused: no space") for m in messages)

            (var / "filler").unlink()  # space again
            create_plans(env, 2)
            wait_for(lambda: generated(env["DATABASE_URL"]) == 18, timeout=60, message="every day generated")
            wait_for(lambda: "metrics counting again" in (tmp_path / "worker.log").read_text(), timeout=20,
                     message="counting again")
            assert proc.poll() is None and tree(proc) == pids
            assert list((var / "metrics").glob("counter_*.db"))
        finally:
            assert processes.stop(proc) == 0


def test_a_full_database_disk_is_named_and_deferred_not_a_spent_retry(fleet_env, broker, openai_sim, processes,
                                                                       tmp_path):
    """A full database disk is named as such (not "cannot rollback") and its jobs are deferred past
    their budget of one retry without failing; every day is generated once space returns."""
    disk = tmp_path / "db"
    env = dict(fleet_env, DATABASE_URL=f"sqlite:///{disk}/fleet.db", FLEET_LOG_FORMAT="json",
               FLEET_RETRY_DELAYS="1", FLEET_CIRCUIT_RESET="1")
    with tmpfs(disk, "8m"):
        migrated(env["DATABASE_URL"])
        create_plans(env, 4)  # their jobs wait in Redis: no worker yet
        with sqlite3.connect(disk / "fleet.db") as connection:  # an empty WAL: every write needs new blocks
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        fill(disk)
        proc = start_fleet_worker(processes, tmp_path / "worker.log", env)
        try:
            wait_for(lambda: len(tree(proc)) == 3, timeout=30, message="Dramatiq's main and two worker processes")
            pids = tree(proc)

            def flush_warnings():
                return [line for line in log_lines(tmp_path / "worker.log") if line["msg"].startswith("JobLog flush failed")]

            wait_for(flush_warnings, timeout=30, message="the JobLog writer meeting the full disk")
            assert "database or disk is full" in flush_warnings()[0]["error"]
            # the jobs meet the full disk again and again, past their budget of one retry
            wait_for(lambda: most_deferrals(broker) >= 3, timeout=30, message="jobs deferred three times")
            assert generated(env["DATABASE_URL"]) == 0

            (disk / "filler").unlink()
            wait_for(lambda: generated(env["DATABASE_URL"]) == 12, timeout=90, message="every day generated")
            assert proc.poll() is None and tree(proc) == pids
        finally:
            assert processes.stop(proc) == 0
        assert "cannot rollback" not in (tmp_path / "worker.log").read_text()
        assert dead_letters.count_dead_letters(broker) == 0
        db = open_database(env["DATABASE_URL"])
        with JobLog.bind_ctx(db), db.connection_context():
            rows = list(JobLog.select())
        db.close_all()
        assert not [r for r in rows if r.status in ("failed", "retrying")]
        deferred = [r for r in rows if r.status == "deferred"]
        assert deferred and all(r.error_code == "ERR_DATABASE" and "disk is full" in r.message for r in deferred)
