import pytest

from core.settings import SettingsError, load_settings
from tests.helpers import fleet


def test_defaults_need_no_server(tmp_path):
    s = load_settings({"FLEET_VAR_DIR": str(tmp_path)})
    assert s.database_url == f"sqlite:///{tmp_path}/fleet.db"
    assert s.embedded_broker and s.broker_url == f"unix://{tmp_path}/redis.sock"
    assert s.retry_delays == (60, 300, 1800)
    assert (s.circuit_failures, s.circuit_reset, s.heartbeat_timeout) == (5, 60, 60)
    assert s.openai_model == "gpt-4o-mini"
    assert s.series_api_url.startswith("https://api4.thetvdb.com")


def test_values_are_parsed(tmp_path):
    s = load_settings({
        "FLEET_VAR_DIR": str(tmp_path),
        "DATABASE_URL": "postgresql://u:p@db/fleet",
        "BROKER_URL": "amqp://guest:guest@mq:5672/",
        "FLEET_RETRY_DELAYS": "1, 2,3",
        "FLEET_CIRCUIT_RESET": "0.5",
    })
    assert s.retry_delays == (1, 2, 3)
    assert s.is_rabbitmq and not s.embedded_broker
    assert s.circuit_reset == 0.5


@pytest.mark.parametrize("variable,value,problem", [
    ("DATABASE_URL", "fleet.db", "is not a URL"),
    ("DATABASE_URL", "mysql://x/y", "unsupported scheme 'mysql'"),
    ("BROKER_URL", "kafka://x", "unsupported scheme 'kafka'"),
    ("FLEET_RETRY_DELAYS", "60,-1", "must be at least 0"),
    ("FLEET_RETRY_DELAYS", "60,soon", "is not a whole number"),
    ("FLEET_CIRCUIT_FAILURES", "0", "must be at least 1"),
    ("FLEET_CIRCUIT_RESET", "abc", "is not a number"),
    ("FLEET_HEARTBEAT_TIMEOUT", "-5", "must be at least 1"),
    ("OPENAI_BASE_URL", "localhost:8000", "is not a URL"),
])
def test_bad_value_names_variable(tmp_path, variable, value, problem):
    with pytest.raises(SettingsError) as err:
        load_settings({"FLEET_VAR_DIR": str(tmp_path), variable: value})
    assert err.value.variable == variable
    assert problem in str(err.value)


def test_bad_value_stops_the_cli_with_one_line_and_exit_2(fleet_env):
    result = fleet("db", "status", env=dict(fleet_env, FLEET_CIRCUIT_FAILURES="-3"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["fleet: FLEET_CIRCUIT_FAILURES: '-3' must be at least 1"]


def test_dotenv_file_is_read(fleet_env, tmp_path):
    (tmp_path / ".env").write_text("FLEET_RETRY_DELAYS=oops\n")
    env = dict(fleet_env)
    env.pop("FLEET_RETRY_DELAYS", None)
    result = fleet("db", "status", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "FLEET_RETRY_DELAYS" in result.stderr


def test_secret_key_is_generated_once_and_private(tmp_path):
    s = load_settings({"FLEET_VAR_DIR": str(tmp_path)})
    key = s.secret_key
    assert len(key) == 64 and s.secret_key == key
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("command", [["worker"], ["scheduler"], ["web"]])
def test_rabbitmq_without_a_state_redis_refuses_to_start(fleet_env, command):
    """RabbitMQ without a state Redis refuses to start, so unique jobs, breakers and the login throttle
    never silently become per process."""
    from core.net import free_port
    from tests.helpers import fleet

    env = dict(fleet_env, BROKER_URL=f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    env.pop("FLEET_STATE_REDIS_URL", None)
    args = command + (["--port", str(free_port())] if command == ["web"] else [])
    refused = fleet(*args, env=env, timeout=30)
    assert refused.returncode == 2
    [line] = refused.stderr.strip().splitlines()
    assert line.startswith("fleet: FLEET_STATE_REDIS_URL: must be set with RabbitMQ") and "FLEET_ALLOW_LOCAL_STATE=1" in line
    if command == ["worker"]:
        trial = fleet("worker", env=dict(env, FLEET_ALLOW_LOCAL_STATE="1"), timeout=30)
        assert trial.returncode == 1 and "broker unreachable" in trial.stderr  # past the check


def test_max_defer_and_allow_local_state_are_validated():
    assert load_settings({"FLEET_MAX_DEFER": "90"}).max_defer == 90
    assert load_settings({}).max_defer == 6 * 3600
    assert load_settings({"FLEET_ALLOW_LOCAL_STATE": "1"}).allow_local_state is True
    with pytest.raises(SettingsError, match="FLEET_MAX_DEFER"):
        load_settings({"FLEET_MAX_DEFER": "soon"})
    with pytest.raises(SettingsError, match="FLEET_ALLOW_LOCAL_STATE"):
        load_settings({"FLEET_ALLOW_LOCAL_STATE": "maybe"})


def test_lease_and_lock_ttls_keep_their_defaults_and_are_bounded():
    defaults = load_settings({})
    assert (defaults.scheduler_lease, defaults.overlap_lock_ttl, defaults.dead_worker_checks) == (10, 15, 0.1)
    short = load_settings({"FLEET_SCHEDULER_LEASE": "4", "FLEET_OVERLAP_LOCK_TTL": "6.5"})
    assert (short.scheduler_lease, short.overlap_lock_ttl) == (4, 6.5)
    for variable, value, problem in [("FLEET_SCHEDULER_LEASE", "1", "must be at least 3"),
                                     ("FLEET_SCHEDULER_LEASE", "1e9", "must be at most 300"),
                                     ("FLEET_OVERLAP_LOCK_TTL", "2", "must be at least 3"),
                                     ("FLEET_OVERLAP_LOCK_TTL", "inf", "is not a finite number"),
                                     ("FLEET_DEAD_WORKER_CHECKS", "0", "must be at least 0.001"),
                                     ("FLEET_DEAD_WORKER_CHECKS", "2", "must be at most 1")]:
        with pytest.raises(SettingsError, match=problem) as err:
            load_settings({variable: value})
        assert err.value.variable == variable


def test_the_fast_password_hash_is_only_used_when_asked_for(db):
    from werkzeug.security import check_password_hash

    from db.models.accounts import PanelAccount

    assert load_settings({}).password_hash_method is None  # werkzeug's default (scrypt)
    assert load_settings({"FLEET_INSECURE_FAST_PASSWORD_HASH": "1"}).password_hash_method == "pbkdf2:sha256:1"
    account = PanelAccount(email="x@example.com")
    account.set_password("a-long-password")
    assert account.password_hash.startswith("scrypt:") and account.check_password("a-long-password")
    account.set_password("a-long-password", "pbkdf2:sha256:1")
    assert account.password_hash.startswith("pbkdf2:sha256:1$")
    assert check_password_hash(account.password_hash, "a-long-password")
