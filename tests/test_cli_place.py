"""The CLI run away from its fleet: it names where it looked instead of starting an empty fleet
there; argument errors come before any output; log lines are human unless JSON is asked for."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import fleet, migrated, wait_for


@pytest.fixture
def elsewhere(tmp_path, redis_url):
    """An empty directory, and an environment that names no var/ and no database."""
    directory = tmp_path / "elsewhere"
    directory.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("FLEET_VAR_DIR", "DATABASE_URL")}
    env["BROKER_URL"] = redis_url
    return directory, env


@pytest.mark.parametrize("command", [["jobs", "stats"], ["accounts", "list"], ["workouts", "status"],
                                     ["db", "status"], ["schedule", "list"], ["worker"], ["web", "--port", "1"]])
def test_a_command_in_an_empty_directory_creates_no_database_and_says_where_it_looked(elsewhere, command):
    directory, env = elsewhere
    result = fleet(*command, env=env, cwd=directory)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"fleet: no database at {directory}/var/fleet.db;")
    assert "FLEET_VAR_DIR" in line and "fleet db migrate" in line
    assert list(directory.iterdir()) == []  # no var/, no fleet.db


def test_db_migrate_starts_a_fleet_there_and_says_which_var_dir(elsewhere):
    directory, env = elsewhere
    migrated = fleet("db", "migrate", env=env, cwd=directory)
    assert migrated.returncode == 0, migrated.stderr
    assert f"var/: {directory}/var (FLEET_VAR_DIR unset" in migrated.stdout
    assert (directory / "var" / "fleet.db").exists()
    listed = fleet("accounts", "list", env=env, cwd=directory)
    assert listed.returncode == 0 and listed.stderr == ""


def test_requeue_of_an_unknown_id_prints_only_the_error(fleet_env, broker):
    migrated(fleet_env["DATABASE_URL"])
    result = fleet("jobs", "requeue", "not-an-id", env=fleet_env)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == ["fleet: no dead letter with id not-an-id"]


def test_translate_prints_its_lines_and_no_log_line(db, broker, tmp_path):
    source = tmp_path / "hallo.txt"
    source.write_text("Hallo Welt.\n")
    result = fleet("translate", "--from", "de", "--to", "nl", str(source), env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["Started", "Follow"]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_worker_log_lines_are_human_unless_json_is_asked_for(fleet_env, broker, tmp_path, log_format):
    import uuid

    from actors import system

    log = tmp_path / "worker.log"
    env = dict(fleet_env, FLEET_LOG_FORMAT=log_format)
    migrated(env["DATABASE_URL"])
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "fleet", "worker", "-p", "1", "-t", "1"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        nonce = uuid.uuid4().hex
        system.ping.send(nonce)
        wait_for(lambda: nonce in log.read_text(), timeout=30, message="pong")
        line = next(text for text in log.read_text().splitlines() if nonce in text)
        if log_format == "json":
            assert json.loads(line)["msg"] == "pong"
        else:
            assert " INFO " in line and "pong" in line and not line.startswith("{")
    finally:
        proc.terminate()
        assert proc.wait(15) == 0
