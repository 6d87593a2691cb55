"""Alert rules read from a TOML file (FLEET_ALERTS: a path or a shipped name, `default`).

    delivery_retries = ["10s", "1m", "5m", "30m"]   # a channel that fails is tried again after these

    [openai-outage]
    kind = "breaker_open"        # what it watches (KINDS)
    services = ["openai"]        # the kind's own settings; each has a default
    severity = "critical"        # info | warning | critical
    repeat = "1h"                # told again after this while it still fires ("0s": once)

A bad file is refused as a whole: `RulesError` lists one line a problem, naming the rule.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from core import formats
from core.config_files import FileProblems, find_file, read_toml
from core.errors import FleetError
from core.settings import get_settings

SHIPPED = Path(__file__).resolve().parent / "rules"
SEVERITIES = ("info", "warning", "critical")
RULE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
MAX_DURATION = 30 * 86400
DEFAULT_RETRIES = ("10s", "1m", "5m", "30m")


class RulesError(FileProblems):
    """An invalid rules file: one line a problem, each naming the rule."""


class _Problem(ValueError):
    pass


def duration(key: str, value) -> float:
    """"90s", "10m", "1h30m" → seconds."""
    seconds = formats.parse_span(value)
    if seconds is None:
        raise _Problem(f"{key}: {value!r} is not a duration such as \"10m\" (units s, m, h, d)")
    if seconds > MAX_DURATION:
        raise _Problem(f"{key}: {value!r} is longer than 30 days")
    return float(seconds)


# A kind's settings: name -> (type, default); a duration is "duration", a list of strings "names".
KINDS: dict[str, dict[str, tuple[str, object]]] = {
    "breaker_open": {"services": ("names", [])},
    "host_held_back": {"services": ("names", [])},
    "failure_rate": {"actor": ("text", ""), "error_code": ("text", ""), "window": ("duration", "15m"),
                     "threshold": ("share", 0.5), "min_attempts": ("count", 20)},
    "queue_wait": {"queue": ("text", ""), "max_age": ("duration", "10m")},
    "queue_depth": {"queue": ("text", ""), "max_ready": ("count", 10_000)},
    "dead_letters": {"growth": ("count", 10), "window": ("duration", "15m")},
    "schedule_missed": {"entry": ("text", ""), "in_a_row": ("count", 3), "window": ("duration", "10m")},
    "no_scheduler": {},
    "host_lost": {"window": ("duration", "1h")},
    "clock_skew": {"max_offset": ("duration", "1s")},
    "joblog_dropped": {"growth": ("count", 1), "window": ("duration", "15m")},
    "unreachable": {"checks": ("names", ["database", "broker"]), "within": ("duration", "2m")},
    "ai_spend": {"share": ("share", 0.8), "window": ("duration", "15m")},
    "batch_finished": {"statuses": ("names", ["completed", "failed"]), "window": ("duration", "10m"),
                       "asked_only": ("flag", False)},
}
COMMON = {"kind", "severity", "repeat", "enabled", "description"}
EVENT_KINDS = ("batch_finished",)  # told once a subject; nothing to resolve


@dataclass(frozen=True)
class Rule:
    name: str
    kind: str
    severity: str
    repeat: float  # seconds; 0 = told once while it fires
    params: dict = field(default_factory=dict)
    enabled: bool = True
    description: str = ""

    @property
    def is_event(self) -> bool:
        return self.kind in EVENT_KINDS


@dataclass(frozen=True)
class Rules:
    path: Path
    rules: dict[str, Rule]
    delivery_retries: tuple[float, ...]
    digest: str

    @property
    def enabled(self) -> list[Rule]:
        return [r for r in self.rules.values() if r.enabled]

    def rule(self, name: str) -> Rule:
        if name not in self.rules:
            raise FleetError(f"no alert rule named {name!r} in {self.path} (rules: {', '.join(self.rules) or 'none'})")
        return self.rules[name]


def rules_path(value: str, setting: str | None = None) -> Path:
    return find_file(value, SHIPPED, "rules file", RulesError, setting)


def alerts_setting() -> str:
    import os

    get_settings()  # loads .env into the environment first
    return os.environ.get("FLEET_ALERTS") or "default"


def load_rules(value: str | Path | None = None) -> Rules:
    """Read and check a rules file (FLEET_ALERTS when None); RulesError lists every problem."""
    path = rules_path(str(value)) if value is not None else rules_path(alerts_setting(), "FLEET_ALERTS")
    raw = path.read_bytes()
    data = read_toml(path, RulesError)
    problems: list[str] = []
    retries = data.pop("delivery_retries", list(DEFAULT_RETRIES))
    try:
        if not isinstance(retries, list) or len(retries) > 10:
            raise _Problem("must be a list of at most 10 durations, e.g. [\"10s\", \"1m\"]")
        delays = tuple(duration("delivery_retries", d) for d in retries)
    except _Problem as exc:
        problems.append(f"{path}: delivery_retries: {exc}")
        delays = ()
    rules = {}
    for name, table in data.items():
        if not RULE_NAME.fullmatch(name):
            problems.append(f"{path}: [{name!r}] a rule's name is letters, digits, '-', '_' and '.' (at most 100)")
        elif not isinstance(table, dict):
            problems.append(f"{path}: {name}: unknown setting (a rule is a table: [{name}])")
        else:
            try:
                rules[name] = _rule(name, table)
            except _Problem as exc:
                problems.append(f"{path}: [{name}] {exc}")
    if not rules and not problems:
        problems.append(f"{path}: no rules (a rule is a table such as [openai-outage])")
    if problems:
        raise RulesError(problems)
    return Rules(path, rules, delays, hashlib.sha1(raw).hexdigest()[:10])


def _rule(name: str, table: dict) -> Rule:
    kind = table.get("kind")
    if kind not in KINDS:
        raise _Problem(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    spec = KINDS[kind]
    unknown = sorted(set(table) - COMMON - set(spec))
    if unknown:
        allowed = ", ".join(sorted(COMMON | set(spec)))
        raise _Problem(f"unknown key {unknown[0]!r} for kind {kind} (keys: {allowed})")
    severity = table.get("severity", "warning")
    if severity not in SEVERITIES:
        raise _Problem(f"severity must be one of {', '.join(SEVERITIES)}, not {severity!r}")
    repeat = duration("repeat", table.get("repeat", "1h"))
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise _Problem("enabled must be true or false")
    description = table.get("description", "")
    if not isinstance(description, str):
        raise _Problem("description must be a string")
    params = {key: _param(key, kind_, table.get(key, default)) for key, (kind_, default) in spec.items()}
    if kind == "unreachable" and not set(params["checks"]) <= {"database", "broker"}:
        raise _Problem("checks: each is \"database\" or \"broker\"")
    if kind == "batch_finished" and not set(params["statuses"]) <= {"completed", "failed", "cancelled"}:
        raise _Problem("statuses: each is \"completed\", \"failed\" or \"cancelled\"")
    if kind in ("breaker_open", "host_held_back"):
        from core.breakers import SERVICES

        strange = [s for s in params["services"] if s not in SERVICES]
        if strange:
            raise _Problem(f"services: unknown service {strange[0]!r} (services: {', '.join(SERVICES)})")
    if kind == "failure_rate" and params["error_code"]:
        from core.errors import CODES

        if params["error_code"] not in CODES:
            raise _Problem(f"error_code: unknown code {params['error_code']!r}")
    return Rule(name, kind, severity, repeat, params, enabled, description)


def _param(key: str, kind: str, value):
    if kind == "duration":
        seconds = duration(key, value)
        if not seconds:
            raise _Problem(f"{key}: must be longer than 0 s")
        return seconds
    if kind == "count":
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000_000:
            raise _Problem(f"{key}: must be a whole number from 1 to 10,000,000, not {value!r}")
        return value
    if kind == "share":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise _Problem(f"{key}: must be a share above 0 and at most 1 (0.5 = half), not {value!r}")
        return float(value)
    if kind == "flag":
        if not isinstance(value, bool):
            raise _Problem(f"{key}: must be true or false")
        return value
    if kind == "names":
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise _Problem(f"{key}: must be a list of names, e.g. [\"openai\"]")
        return list(value)
    if not isinstance(value, str):
        raise _Problem(f"{key}: must be a string")
    return value
