"""The one registry of error codes, the classifier that maps any exception to one, and
`FleetError`, the error an entry point prints as one line.

Every failure Fleet stores (JobLog, domain rows, dead letters) carries a code from
`CODES`. `classify(exc)` is the only place that knows which exception means what.
"""
from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from time import time


class FleetError(Exception):
    """An error the CLI prints as one line (`fleet: …`) before exiting with `exit_code`."""

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


@dataclass(frozen=True)
class ErrorCode:
    code: str
    retryable: bool
    sentence: str
    trips_breaker: bool = False  # does it say the service itself is unhealthy?


CODES: dict[str, ErrorCode] = {
    e.code: e
    for e in [
        ErrorCode("ERR_API_TIMEOUT", True, "The external API did not answer in time.", trips_breaker=True),
        ErrorCode("ERR_RATE_LIMIT", True, "The external API asked us to slow down (HTTP 429); retried later."),
        ErrorCode("ERR_SPEND_CAP", True, "Today's AI spend has reached FLEET_OPENAI_DAILY_USD; AI jobs wait until tomorrow or until the cap is raised."),
        ErrorCode("ERR_QUOTA_EXCEEDED", False, "The account's quota or credit at the provider is used up; top it up, then retry."),
        ErrorCode("ERR_API_UNAVAILABLE", True, "The external API failed on its side (HTTP 5xx).", trips_breaker=True),
        ErrorCode("ERR_CONNECTION", True, "The external API could not be reached (network or DNS).", trips_breaker=True),
        ErrorCode("ERR_AUTH", False, "The external API refused our credentials (HTTP 401/403); check the API key."),
        ErrorCode("ERR_BAD_REQUEST", False, "The external API rejected the request as invalid (HTTP 400/422)."),
        ErrorCode("ERR_NOT_FOUND", False, "The external API does not know the requested item (HTTP 404)."),
        ErrorCode("ERR_INVALID_RESPONSE", False, "The external API answered with malformed or unexpected data."),
        ErrorCode("ERR_CIRCUIT_OPEN", True, "Calls to this service are paused after repeated failures; the job waits until it recovers."),
        ErrorCode("ERR_TIME_LIMIT", True, "The job ran longer than its time limit and was stopped."),
        ErrorCode("ERR_INPUT_FILE", False, "The input file cannot be used: missing, unreadable, binary, not UTF-8 text, too large, or not safe to parse (nested too deep, a number that is not JSON, a key twice); fix the file, then retry."),
        ErrorCode("ERR_DATABASE", True, "The database could not be reached, dropped the connection or refused the write; the job waits until it is back, spending no retry."),
        ErrorCode("ERR_STATE_STORE", True, "Redis (queues, locks, breakers) could not be reached or refused the write (out of memory, read-only); the job waits until it is back, spending no retry."),
        ErrorCode("ERR_INVALID_MESSAGE", False, "The queued message is not a valid job (not JSON, fields missing, or an unknown actor); it was set aside."),
        ErrorCode("ERR_INTERNAL", True, "An unexpected error inside Fleet; retried within the budget, see the traceback."),
    ]
}


@dataclass(frozen=True)
class Classified:
    code: ErrorCode
    message: str
    retry_after: float | None = None  # seconds the API asked us to wait
    defer_seconds: float | None = None  # an outage to wait out without spending a retry (FLEET_MAX_DEFER bounds it)

    @property
    def retryable(self) -> bool:
        return self.code.retryable


class JobError(Exception):
    """Raised by actors and clients to fail with a specific code."""

    def __init__(self, code: str, message: str, retry_after: float | None = None):
        if code not in CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after


def retry_after_seconds(headers) -> float | None:
    """Seconds from a `Retry-After` header (delta or HTTP date), if any."""
    value = headers.get("retry-after") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time())
    except (TypeError, ValueError):
        return None


def code_for_status(status: int, body_text: str = "") -> str:
    if status == 429:
        return "ERR_QUOTA_EXCEEDED" if "insufficient_quota" in body_text else "ERR_RATE_LIMIT"
    if status in (401, 403):
        return "ERR_AUTH"
    if status == 404:
        return "ERR_NOT_FOUND"
    if status == 408:
        return "ERR_API_TIMEOUT"
    if status >= 500:
        return "ERR_API_UNAVAILABLE"
    if 400 <= status < 500:
        return "ERR_BAD_REQUEST"
    return "ERR_INVALID_RESPONSE"


def _classify_openai(exc) -> Classified | None:
    openai = sys.modules.get("openai")  # not imported: `exc` is none of its errors (and importing it takes seconds)
    if openai is None:
        return None
    if isinstance(exc, openai.APITimeoutError):
        return Classified(CODES["ERR_API_TIMEOUT"], "OpenAI did not answer in time")
    if isinstance(exc, openai.APIConnectionError):
        return Classified(CODES["ERR_CONNECTION"], f"OpenAI unreachable: {exc}")
    if isinstance(exc, openai.APIStatusError):
        body = json.dumps(exc.body) if exc.body is not None else ""
        code = code_for_status(exc.status_code, f"{body} {getattr(exc, 'code', '') or ''}")
        return Classified(CODES[code], f"OpenAI HTTP {exc.status_code}: {exc.message}",
                          retry_after_seconds(exc.response.headers))
    if isinstance(exc, (openai.APIResponseValidationError, openai.LengthFinishReasonError,
                        openai.ContentFilterFinishReasonError)):
        return Classified(CODES["ERR_INVALID_RESPONSE"], f"OpenAI answer unusable: {exc}")
    return None


def _classify_requests(exc) -> Classified | None:
    import requests

    if isinstance(exc, requests.Timeout):
        return Classified(CODES["ERR_API_TIMEOUT"], f"API timeout: {exc}")
    if isinstance(exc, requests.ConnectionError):
        return Classified(CODES["ERR_CONNECTION"], f"API unreachable: {exc}")
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        response = exc.response
        code = code_for_status(response.status_code, response.text[:2000])
        return Classified(CODES[code], f"HTTP {response.status_code} from {response.url}",
                          retry_after_seconds(response.headers))
    if isinstance(exc, requests.exceptions.InvalidJSONError):
        return Classified(CODES["ERR_INVALID_RESPONSE"], f"API answered invalid JSON: {exc}")
    return None


DISK_FULL = re.compile(r"disk is full|disk full|no space left on device|could not extend file", re.I)


# Outages wait, spending no retry (bounded by FLEET_MAX_DEFER): the database or Redis
# unreachable, Redis out of memory (`noeviction`), read-only, loading or failing to persist.
DATABASE_PERMANENT = re.compile(r"no such (table|column)|syntax error|does not exist|permission denied|"
                                r"datatype mismatch|violates|constraint|must be|is ambiguous", re.I)
REDIS_REFUSES = re.compile(r"(?:^|-)((?:OOM|MISCONF|LOADING|READONLY|MASTERDOWN|NOREPLICAS|BUSY|CLUSTERDOWN|TRYAGAIN) .*)")


def database_error_text(exc: BaseException) -> str:
    """A database error in one line; the error that made a rollback fail when the rollback's own
    ("cannot rollback - no transaction is active": SQLite rolled back by itself, disk full) hides it."""
    while "cannot rollback" in str(exc) and exc.__context__ is not None:
        exc = exc.__context__
    return " ".join(str(exc).split()) or type(exc).__name__


def _classify_infrastructure(exc) -> Classified | None:
    import peewee
    import redis
    from dramatiq.errors import BrokerConnectionError
    from playhouse.pool import MaxConnectionsExceeded

    from db.database import NO_CONNECTION_SLOT, POOL_WAIT

    if isinstance(exc, (peewee.OperationalError, peewee.InterfaceError, MaxConnectionsExceeded)):
        text = database_error_text(exc)
        if isinstance(exc, MaxConnectionsExceeded) or NO_CONNECTION_SLOT.search(text):
            # every connection slot taken (the server's or this process's pool): wait for one, no retry spent
            return Classified(CODES["ERR_DATABASE"], f"database: no free connection slot ({text[:280]})",
                              defer_seconds=POOL_WAIT)
        if DISK_FULL.search(text):
            from core.settings import get_settings

            return Classified(CODES["ERR_DATABASE"], f"database: disk is full ({text[:280]})",
                              defer_seconds=get_settings().circuit_reset)
        if DATABASE_PERMANENT.search(text):  # the schema or the statement: waiting will not help
            return Classified(CODES["ERR_DATABASE"], f"database: {text[:300]}")
        return Classified(CODES["ERR_DATABASE"], f"database: {text[:300]}", defer_seconds=_outage_wait())
    if isinstance(exc, (redis.RedisError, BrokerConnectionError)):
        text = str(exc)[:500] or type(exc).__name__
        # also inside "Error running script …: -OOM command not allowed …"; a pipeline's error says
        # "Command # 1 (…) of pipeline caused error: command not allowed when used memory …"
        refused = REDIS_REFUSES.search(text)
        if refused is None and isinstance(exc, redis.exceptions.OutOfMemoryError):
            text = "OOM " + text.rpartition("caused error: ")[2]
        text = refused.group(1)[:300] if refused else text[:300]
        outage = refused or isinstance(exc, (redis.ConnectionError, redis.TimeoutError, BrokerConnectionError,
                                             redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError,
                                             redis.exceptions.BusyLoadingError, redis.exceptions.MasterDownError,
                                             redis.exceptions.TryAgainError, redis.exceptions.ClusterDownError))
        return Classified(CODES["ERR_STATE_STORE"], f"Redis: {text}", defer_seconds=_outage_wait() if outage else None)
    return None


def _outage_wait() -> float:
    from core.settings import get_settings

    return get_settings().outage_wait


def is_outage(exc: BaseException) -> bool:
    """Is the database or Redis unreachable, or refusing writes (what waits, spending no retry)?"""
    found = _classify_infrastructure(exc)
    return found is not None and found.defer_seconds is not None


def is_infrastructure(exc: BaseException) -> bool:
    """Does `exc` say the database or Redis is away (rather than that the work itself failed)?"""
    return _classify_infrastructure(exc) is not None


def classify(exc: BaseException) -> Classified:
    """The error code, an operator-readable message and any Retry-After for `exc`."""
    if isinstance(exc, JobError):
        return Classified(CODES[exc.code], str(exc), exc.retry_after)

    from dramatiq.middleware import TimeLimitExceeded
    from pybreaker import CircuitBreakerError

    if isinstance(exc, TimeLimitExceeded):
        return Classified(CODES["ERR_TIME_LIMIT"], "the job exceeded its time limit")
    if isinstance(exc, CircuitBreakerError):
        return Classified(CODES["ERR_CIRCUIT_OPEN"], str(exc) or "circuit breaker open")
    for classifier in (_classify_openai, _classify_requests, _classify_infrastructure):
        found = classifier(exc)
        if found:
            return found
    import jsonschema

    if isinstance(exc, (json.JSONDecodeError, jsonschema.ValidationError)):
        return Classified(CODES["ERR_INVALID_RESPONSE"], f"invalid response: {str(exc).splitlines()[0]}")
    return Classified(CODES["ERR_INTERNAL"], f"{type(exc).__name__}: {exc}")
