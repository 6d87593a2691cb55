"""Bad input to the `fleet` command: one line on stderr and exit code 2, never a traceback."""
from __future__ import annotations

import pytest

from tests import helpers
from tests.helpers import fleet, usage_error

HUGE = str(10**23)


@pytest.fixture
def migrated(fleet_env):
    helpers.migrated(fleet_env["DATABASE_URL"])
    return fleet_env


@pytest.mark.parametrize("args", [
    ["workouts", "status", "--plan", HUGE],
    ["workouts", "status", "--user", HUGE],
    ["workouts", "retry-failed", "--plan", HUGE, "--yes"],
    ["workouts", "create-plan", "--user", HUGE, "--days", "1", "--goal", "x"],
    ["workouts", "rescue-stale", "--hours", "nan"],
    ["workouts", "rescue-stale", "--hours", "inf"],
    ["workouts", "rescue-stale", "--hours", "1e10"],
    ["jobs", "stats", "--hours", "nan"],
    ["jobs", "stats", "--hours", "1e10"],
    ["jobs", "cleanup", "--days", "inf"],
    ["jobs", "cleanup", "--keep", HUGE],
    ["worker", "-p", "1e10"],
    ["worker", "-t", "100000"],
    ["web", "--port", "70000"],
    ["simulate", "openai", "--latency-ms", "nan"],
    ["simulate", "series-api", "--missing", HUGE],
])
def test_out_of_range_options_are_usage_errors(args):
    """Parsed as the command line of a process (tests.helpers.usage_error), nothing run."""
    assert "Invalid value" in (usage_error(*args) or "parsed")


def test_an_out_of_range_option_is_exit_2_and_no_traceback(migrated):
    result = fleet("web", "--port", "70000", env=migrated)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "Invalid value for '--port'" in result.stderr


@pytest.mark.parametrize("variable,value,problem", [
    ("FLEET_CIRCUIT_RESET", "nan", "is not a finite number"),
    ("FLEET_HEARTBEAT_TIMEOUT", "inf", "is not a finite number"),
    ("FLEET_HEARTBEAT_TIMEOUT", "1e30", "must be at most 3600"),
    ("FLEET_RETRY_DELAYS", "60,99999999999999999999", "must be at most 604800"),
    ("FLEET_TRUSTED_PROXIES", "-1", "must be at least 0"),
    ("BROKER_URL", "redis://localhost:abc/0", "has a port that is not a number"),
    ("DATABASE_URL", "postgresql://u@db:99999/fleet", "has a port that is not a number"),
])
def test_bad_settings_are_one_line_and_exit_2(fleet_env, variable, value, problem):
    result = fleet("db", "status", env=dict(fleet_env, **{variable: value}))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fleet: {variable}: ") and problem in lines[0]


@pytest.mark.parametrize("command", [["db", "status"], ["accounts", "list"], ["up", "--port", "1"]])
def test_an_unwritable_var_dir_is_one_line_and_exit_2(fleet_env, tmp_path, command):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    env = dict(fleet_env, FLEET_VAR_DIR=str(blocker / "var"))
    env.pop("DATABASE_URL")
    result = fleet(*command, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "FLEET_VAR_DIR" in lines[0] and str(blocker / "var") in lines[0]
    # only `fleet up` would create the database; the others say there is none there
    expected = "must be a writable directory" if command[0] == "up" else "no database at"
    assert expected in lines[0]


def test_the_database_file_is_private(fleet_env, tmp_path):
    env = dict(fleet_env)
    env.pop("DATABASE_URL")
    assert fleet("db", "migrate", env=env).returncode == 0
    for name in ("fleet.db", "fleet.db-wal", "fleet.db-shm"):
        path = tmp_path / "var" / name
        if path.exists():
            assert path.stat().st_mode & 0o777 == 0o600, name


def test_set_password_disable_and_enable(migrated):
    assert fleet("accounts", "create", "op@example.com", "--password-stdin", env=migrated,
                 input="first-password\n").returncode == 0
    changed = fleet("accounts", "set-password", "OP@example.com", "--password-stdin", env=migrated,
                    input="second-password\n")
    assert changed.returncode == 0 and "its sessions have ended" in changed.stdout
    short = fleet("accounts", "set-password", "op@example.com", "--password-stdin", env=migrated, input="short\n")
    assert short.returncode == 2 and "at least 12 characters" in short.stderr
    common = fleet("accounts", "set-password", "op@example.com", "--password-stdin", env=migrated,
                   input="qwerty123456\n")
    assert common.returncode == 2 and common.stderr.count("\n") == 1 and "most common passwords" in common.stderr
    missing = fleet("accounts", "disable", "nobody@example.com", env=migrated)
    assert missing.returncode == 1 and missing.stderr.strip() == "fleet: no account for nobody@example.com"
    assert fleet("accounts", "disable", "op@example.com", env=migrated).returncode == 0
    assert "disabled" in fleet("accounts", "list", env=migrated).stdout
    assert fleet("accounts", "enable", "op@example.com", env=migrated).returncode == 0
    assert "disabled" not in fleet("accounts", "list", env=migrated).stdout

    from db.database import open_database
    from db.models.accounts import PanelAccount

    with PanelAccount.bind_ctx(open_database(migrated["DATABASE_URL"])):
        account = PanelAccount.get(PanelAccount.email == "op@example.com")
        assert account.check_password("second-password") and account.session_version == 2
