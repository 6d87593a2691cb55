"""Settings from the environment or a `.env` file, validated once per process.

A bad value raises `SettingsError` naming the variable; the CLI turns it into one
line on stderr and exit code 2.
"""
from __future__ import annotations

import math
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv import load_dotenv

DATABASE_SCHEMES = {"sqlite", "postgres", "postgresql"}
BROKER_SCHEMES = {"redis", "rediss", "unix", "amqp", "amqps"}
DEFAULT_SERIES_API_URL = "https://api4.thetvdb.com/v4"
MAX_BATCH_CHUNK = 50


class SettingsError(Exception):
    def __init__(self, variable: str, problem: str):
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


@dataclass(frozen=True)
class Settings:
    var_dir: Path
    var_dir_found_by: str  # how var_dir was chosen, for the lines that name it
    database_url: str
    broker_url: str
    embedded_broker: bool
    openai_api_key: str | None
    openai_base_url: str | None
    openai_model: str
    series_api_url: str
    series_api_key: str | None = field(repr=False)
    retry_delays: tuple[int, ...]
    circuit_failures: int
    circuit_reset: float
    heartbeat_timeout: float
    secret_key_override: str | None = field(repr=False)
    state_redis_url: str | None = None
    series_api_rate: int = 20  # requests a second, for the whole fleet
    trusted_proxies: int = 0  # proxies in front of `fleet web` whose X-Forwarded-* headers are believed
    batch_chunk: int = 50  # items a chunk job of a batch works, at most MAX_BATCH_CHUNK
    max_defer: float = 6 * 3600
    allow_local_state: bool = False
    schedule: str = "default"  # a schedule file: a path, or the name of a shipped one
    timezone: str = "UTC"  # of schedule entries that name none
    schedule_grace: float = 30.0  # seconds a slot may still be emitted late
    openai_rpm: int = 0  # requests a window for the whole fleet; 0 = learned from the provider's headers
    openai_tpm: int = 0  # tokens a window; 0 = learned
    openai_window: float = 60.0  # seconds the provider counts its limits over (a minute; tests shorten it)
    openai_budget: bool = True  # off: calls go out unspaced and a 429 spends a retry (for comparison only)
    openai_daily_usd: float = 0.0  # daily spend cap; 0 = none
    openai_timeout: float = 60.0  # seconds a call may take
    log_format: str = "text"  # "json": one JSON object a line (what `fleet up` writes to var/log/)
    scheduler_lease: float = 10.0  # seconds the leader's lease lasts unrenewed (renewed every quarter of it)
    overlap_lock_ttl: float = 15.0  # seconds a running scheduled job's overlap lock lasts unrenewed
    fast_password_hash: bool = False  # tests only: one PBKDF2 round instead of werkzeug's default
    dead_worker_checks: float = 0.1  # share of Redis fetches that also look for a dead worker's messages
    db_idle_timeout: float = 60.0  # seconds a pooled database connection may stay idle before it is closed
    session_idle: float = 1800.0  # seconds a panel session lasts without a request from its operator
    session_max: float = 43200.0  # seconds a panel session lasts at most from its login, however busy
    audit_retention_days: float = 365.0  # days the audit log keeps an event (pruned by the job-log cleanup)
    metrics_token_required: bool = False  # /metrics answers only with a session or an API token

    @property
    def metrics_dir(self) -> Path:
        """Where worker processes keep their Prometheus counters for /metrics (multiprocess mode)."""
        return self.var_dir / "metrics"

    @property
    def password_hash_method(self) -> str | None:
        """werkzeug's hash method for panel passwords; None for its default."""
        return FAST_PASSWORD_HASH if self.fast_password_hash else None

    @property
    def redis_socket(self) -> Path:
        return self.var_dir / "redis.sock"

    @property
    def is_rabbitmq(self) -> bool:
        return self.broker_url.startswith(("amqp://", "amqps://"))

    @property
    def secret_key(self) -> str:
        """FLEET_SECRET_KEY, or one generated once into var/ and kept there."""
        if self.secret_key_override:
            return self.secret_key_override
        path = self.var_dir / "secret_key"
        if not path.exists():
            self.var_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
        return path.read_text().strip()


# Upper bounds: a value past them is a typo (or `inf`), and would overflow a timer or Redis.
MAX_RETRY_DELAY = 7 * 86400  # seconds before one retry
MAX_RETRIES = 20
MAX_CIRCUIT_FAILURES = 10_000
MAX_CIRCUIT_RESET = 86400  # seconds a breaker stays open
MAX_HEARTBEAT_TIMEOUT = 3600  # seconds before a dead worker's messages run again
MAX_TRUSTED_PROXIES = 10
MAX_SCHEDULE_GRACE = 86400  # seconds a slot may be emitted late
MAX_DEFER = 30 * 86400  # seconds a message may wait for open breakers in all
MAX_SERIES_API_RATE = 10_000  # requests a second
MIN_DB_IDLE_TIMEOUT, MAX_DB_IDLE_TIMEOUT = 1, 3600  # seconds a pooled connection may stay idle
MAX_OPENAI_RPM = 10_000_000  # requests a minute (OpenAI's highest tiers are far below)
MAX_OPENAI_TPM = 10_000_000_000
MAX_OPENAI_WINDOW = 3600
MAX_OPENAI_DAILY_USD = 1_000_000
MAX_OPENAI_TIMEOUT = 600
# A lease or lock renewed by a thread must outlast the renewal's pauses; under the minimum a
# busy host loses it between two renewals. Past the maximum a dead holder blocks for too long.
MIN_SCHEDULER_LEASE, MAX_SCHEDULER_LEASE = 3, 300  # seconds
MIN_OVERLAP_LOCK_TTL, MAX_OVERLAP_LOCK_TTL = 3, 600  # seconds
MAX_SESSION_IDLE = 7 * 86400  # seconds; a copied cookie is good until a limit ends it
MAX_SESSION_LIFETIME = 30 * 86400  # seconds
MAX_AUDIT_RETENTION_DAYS = 36_500
# FLEET_INSECURE_FAST_PASSWORD_HASH=1 (test suites only): panel passwords hashed with one
# PBKDF2 round, so that creating and logging in hundreds of operators costs nothing. Never in
# production: such a hash is as good as the password in clear. Unset, werkzeug's default.
FAST_PASSWORD_HASH = "pbkdf2:sha256:1"


def _url(name: str, value: str, schemes: set[str]) -> str:
    parsed = urlparse(value)
    if not parsed.scheme or "://" not in value:
        raise SettingsError(name, f"{value!r} is not a URL")
    if parsed.scheme not in schemes:
        allowed = ", ".join(sorted(s + "://" for s in schemes))
        raise SettingsError(name, f"unsupported scheme {parsed.scheme!r} (use {allowed})")
    try:
        parsed.port  # noqa: B018  (raises on a port that is not a number from 0 to 65535)
    except ValueError:
        raise SettingsError(name, f"{value!r} has a port that is not a number from 1 to 65535") from None
    return value


def _number(name: str, value: str, *, integer: bool, minimum: float, maximum: float) -> float:
    try:
        number = int(value) if integer else float(value)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise SettingsError(name, f"{value!r} is not {kind}") from None
    if not math.isfinite(number):
        raise SettingsError(name, f"{value!r} is not a finite number")
    if number < minimum:
        raise SettingsError(name, f"{value!r} must be at least {minimum:g}")
    if number > maximum:
        raise SettingsError(name, f"{value!r} must be at most {maximum:g}")
    return number


def _flag(name: str, value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise SettingsError(name, f"{value!r} is not a yes/no value (use 1 or 0)")


def _choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise SettingsError(name, f"{value!r} is not one of {', '.join(choices)}")
    return value


def _delays(name: str, value: str) -> tuple[int, ...]:
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if len(parts) > MAX_RETRIES:
        raise SettingsError(name, f"{len(parts)} delays; at most {MAX_RETRIES} retries")
    return tuple(int(_number(name, p, integer=True, minimum=0, maximum=MAX_RETRY_DELAY)) for p in parts)


def timezone_problem(value) -> str | None:
    """What is wrong with a time zone name, or None when it is one (shared with schedule files)."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        return f"unknown time zone {value!r} (an IANA name such as UTC or Europe/Berlin)"
    return None


def _timezone(name: str, value: str) -> str:
    problem = timezone_problem(value)
    if problem:
        raise SettingsError(name, problem)
    return value


def find_var_dir(env: dict[str, str], cwd: Path) -> tuple[Path, str]:
    """FLEET_VAR_DIR, else `var/` in the working directory; no search further up, where a
    stranger's var/ could be taken for this fleet's."""
    if "FLEET_VAR_DIR" in env:
        return Path(env["FLEET_VAR_DIR"]).absolute(), "FLEET_VAR_DIR"
    return cwd / "var", "FLEET_VAR_DIR unset: var/ in the working directory"


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    if environ is None:
        load_dotenv(Path.cwd() / ".env", override=False)
        environ = dict(os.environ)
    env = {k: v for k, v in environ.items() if v != ""}

    var_dir, var_dir_found_by = find_var_dir(env, Path.cwd())
    database_url = _url(
        "DATABASE_URL", env.get("DATABASE_URL", f"sqlite:///{var_dir}/fleet.db"), DATABASE_SCHEMES
    )
    embedded = "BROKER_URL" not in env
    broker_url = f"unix://{var_dir}/redis.sock" if embedded else _url("BROKER_URL", env["BROKER_URL"], BROKER_SCHEMES)
    if "FLEET_STATE_REDIS_URL" in env:
        state_redis_url = _url("FLEET_STATE_REDIS_URL", env["FLEET_STATE_REDIS_URL"], {"redis", "rediss", "unix"})
    else:
        state_redis_url = None if broker_url.startswith("amqp") else broker_url
    openai_base_url = env.get("OPENAI_BASE_URL")
    if openai_base_url:
        _url("OPENAI_BASE_URL", openai_base_url, {"http", "https"})

    return Settings(
        var_dir=var_dir,
        var_dir_found_by=var_dir_found_by,
        database_url=database_url,
        broker_url=broker_url,
        embedded_broker=embedded,
        openai_api_key=env.get("OPENAI_API_KEY"),
        openai_base_url=openai_base_url,
        openai_model=env.get("FLEET_OPENAI_MODEL", "gpt-4o-mini"),
        series_api_url=_url("SERIES_API_URL", env.get("SERIES_API_URL", DEFAULT_SERIES_API_URL), {"http", "https"}),
        series_api_key=env.get("SERIES_API_KEY"),
        retry_delays=_delays("FLEET_RETRY_DELAYS", env.get("FLEET_RETRY_DELAYS", "60,300,1800")),
        circuit_failures=int(_number("FLEET_CIRCUIT_FAILURES", env.get("FLEET_CIRCUIT_FAILURES", "5"), integer=True,
                                     minimum=1, maximum=MAX_CIRCUIT_FAILURES)),
        circuit_reset=_number("FLEET_CIRCUIT_RESET", env.get("FLEET_CIRCUIT_RESET", "60"), integer=False,
                              minimum=0.1, maximum=MAX_CIRCUIT_RESET),
        heartbeat_timeout=_number("FLEET_HEARTBEAT_TIMEOUT", env.get("FLEET_HEARTBEAT_TIMEOUT", "60"), integer=False,
                                  minimum=1, maximum=MAX_HEARTBEAT_TIMEOUT),
        trusted_proxies=int(_number("FLEET_TRUSTED_PROXIES", env.get("FLEET_TRUSTED_PROXIES", "0"), integer=True,
                                    minimum=0, maximum=MAX_TRUSTED_PROXIES)),
        secret_key_override=env.get("FLEET_SECRET_KEY"),
        state_redis_url=state_redis_url,
        series_api_rate=int(_number("SERIES_API_RATE", env.get("SERIES_API_RATE", "20"), integer=True, minimum=1,
                                    maximum=MAX_SERIES_API_RATE)),
        batch_chunk=int(_number("FLEET_BATCH_CHUNK", env.get("FLEET_BATCH_CHUNK", str(MAX_BATCH_CHUNK)), integer=True,
                                minimum=1, maximum=MAX_BATCH_CHUNK)),
        max_defer=_number("FLEET_MAX_DEFER", env.get("FLEET_MAX_DEFER", str(6 * 3600)), integer=False,
                          minimum=0, maximum=MAX_DEFER),
        allow_local_state=_flag("FLEET_ALLOW_LOCAL_STATE", env.get("FLEET_ALLOW_LOCAL_STATE", "0")),
        schedule=env.get("FLEET_SCHEDULE", "default"),
        timezone=_timezone("FLEET_TIMEZONE", env.get("FLEET_TIMEZONE", "UTC")),
        openai_rpm=int(_number("OPENAI_RPM", env.get("OPENAI_RPM", "0"), integer=True, minimum=0,
                               maximum=MAX_OPENAI_RPM)),
        openai_tpm=int(_number("OPENAI_TPM", env.get("OPENAI_TPM", "0"), integer=True, minimum=0,
                               maximum=MAX_OPENAI_TPM)),
        openai_window=_number("FLEET_OPENAI_WINDOW", env.get("FLEET_OPENAI_WINDOW", "60"), integer=False,
                              minimum=1, maximum=MAX_OPENAI_WINDOW),
        openai_budget=_flag("FLEET_OPENAI_BUDGET", env.get("FLEET_OPENAI_BUDGET", "1")),
        openai_daily_usd=_number("FLEET_OPENAI_DAILY_USD", env.get("FLEET_OPENAI_DAILY_USD", "0"), integer=False,
                                 minimum=0, maximum=MAX_OPENAI_DAILY_USD),
        openai_timeout=_number("OPENAI_TIMEOUT", env.get("OPENAI_TIMEOUT", "60"), integer=False,
                               minimum=1, maximum=MAX_OPENAI_TIMEOUT),
        schedule_grace=_number("FLEET_SCHEDULE_GRACE", env.get("FLEET_SCHEDULE_GRACE", "30"), integer=False,
                               minimum=1, maximum=MAX_SCHEDULE_GRACE),
        log_format=_choice("FLEET_LOG_FORMAT", env.get("FLEET_LOG_FORMAT", "text").lower(), ("text", "json")),
        # how long a SIGKILLed scheduler leader holds the lead (a standby leads within it)
        scheduler_lease=_number("FLEET_SCHEDULER_LEASE", env.get("FLEET_SCHEDULER_LEASE", "10"), integer=False,
                                minimum=MIN_SCHEDULER_LEASE, maximum=MAX_SCHEDULER_LEASE),
        # how long a worker SIGKILLed mid-run keeps a `without_overlapping` entry blocked
        overlap_lock_ttl=_number("FLEET_OVERLAP_LOCK_TTL", env.get("FLEET_OVERLAP_LOCK_TTL", "15"), integer=False,
                                 minimum=MIN_OVERLAP_LOCK_TTL, maximum=MAX_OVERLAP_LOCK_TTL),
        # how soon after FLEET_HEARTBEAT_TIMEOUT a dead worker's messages are found and run again:
        # a pass runs on this share of fetches (each idle consumer fetches about once a second)
        dead_worker_checks=_number("FLEET_DEAD_WORKER_CHECKS", env.get("FLEET_DEAD_WORKER_CHECKS", "0.1"),
                                   integer=False, minimum=0.001, maximum=1),
        db_idle_timeout=_number("FLEET_DB_IDLE_TIMEOUT", env.get("FLEET_DB_IDLE_TIMEOUT", "60"), integer=False,
                                minimum=MIN_DB_IDLE_TIMEOUT, maximum=MAX_DB_IDLE_TIMEOUT),
        session_idle=_number("FLEET_SESSION_IDLE", env.get("FLEET_SESSION_IDLE", "1800"), integer=False,
                             minimum=1, maximum=MAX_SESSION_IDLE),
        session_max=_number("FLEET_SESSION_MAX", env.get("FLEET_SESSION_MAX", "43200"), integer=False,
                            minimum=1, maximum=MAX_SESSION_LIFETIME),
        audit_retention_days=_number("FLEET_AUDIT_RETENTION_DAYS", env.get("FLEET_AUDIT_RETENTION_DAYS", "365"),
                                     integer=False, minimum=1, maximum=MAX_AUDIT_RETENTION_DAYS),
        metrics_token_required=_flag("FLEET_METRICS_TOKEN_REQUIRED", env.get("FLEET_METRICS_TOKEN_REQUIRED", "0")),
        fast_password_hash=_flag("FLEET_INSECURE_FAST_PASSWORD_HASH",
                                 env.get("FLEET_INSECURE_FAST_PASSWORD_HASH", "0")),
    )


_current: Settings | None = None


def get_settings() -> Settings:
    """The settings of this process, loaded on first use."""
    global _current
    if _current is None:
        _current = load_settings()
    return _current


def reset_settings() -> None:
    """Forget the loaded settings so the next `get_settings()` reads the environment again."""
    global _current
    _current = None
