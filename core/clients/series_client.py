"""The series data API (TheTVDB v4 shape): one login token shared by every worker via Redis."""
from __future__ import annotations

import hashlib
import logging
import threading

import requests
from redis.exceptions import LockError
from requests.adapters import HTTPAdapter
from urllib3.util import Retry

from core.breakers import breaker
from core.budget import budget
from core.errors import JobError, retry_after_seconds
from core.settings import Settings
from core.state import state_redis

log = logging.getLogger(__name__)

TOKEN_TTL = 24 * 3600  # TheTVDB tokens last a month; a day bounds how long a revoked one lingers
LOGIN_LOCK_TTL = 15  # seconds; beyond a login's timeout
FOLLOW_UP_WAIT = 20  # seconds a job's login or second try waits for a budget slot: it is well under way
_local_tokens: dict[str, str] = {}  # used only when there is no state Redis (RabbitMQ without one)
_local_lock = threading.Lock()


def retrying_session(connect_retries: int = 3) -> requests.Session:
    """A session that retries connection errors only: never a read timeout, never a status."""
    retry = Retry(total=connect_retries, connect=connect_retries, read=False, status=0,
                  respect_retry_after_header=False, backoff_factor=0.2)
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class SeriesClient:
    def __init__(self, settings: Settings, *, timeout: float = 10.0, connect_retries: int = 3):
        if not settings.series_api_key:
            raise JobError("ERR_AUTH", "SERIES_API_KEY is not set")
        self._base = settings.series_api_url.rstrip("/")
        self._api_key = settings.series_api_key
        self._timeout = timeout
        self._session = retrying_session(connect_retries)
        self._redis = state_redis()
        self._budget = budget("series_api")
        # One cache entry per API and key, so a changed key never reuses the old key's token.
        fingerprint = hashlib.sha256(f"{self._base}\0{self._api_key}".encode()).hexdigest()[:16]
        self._token_key = f"fleet:series_api:token:{fingerprint}"

    def get_series(self, tvdb_id, *, episodes: bool = False) -> dict:
        """The extended series record; with `episodes`, its episode list too."""
        return self._data(f"/series/{tvdb_id}/extended", {"meta": "episodes"} if episodes else None)

    def get_episode(self, tvdb_id) -> dict:
        return self._data(f"/episodes/{tvdb_id}/extended")

    def _data(self, path: str, params: dict | None = None) -> dict:
        token = self._token()
        # The request's slot of the fleet's shared budget, taken once the token is there, right
        # before the request goes out: waiting briefly, OverBudget (the job is deferred) beyond
        # that. Outside the breaker, which would count a request never sent as a success.
        self._budget.acquire()
        response = breaker("series_api").call(self._authorized_get, path, params, token)
        try:
            body = response.json()
        except ValueError:
            raise JobError("ERR_INVALID_RESPONSE", f"series API answered {path} with a body that is not JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
            raise JobError("ERR_INVALID_RESPONSE", f"series API answered {path} without a data object")
        return body["data"]

    def _authorized_get(self, path: str, params: dict | None, token: str) -> requests.Response:
        """GET with the shared token; on 401 log in again once (unless another worker just did)."""
        response = self._get(path, params, token)
        if response.status_code == 401:
            log.info("series API token refused; logging in again")
            token = self._token(stale=token)
            self._budget.acquire(FOLLOW_UP_WAIT)
            response = self._get(path, params, token)
        response.raise_for_status()
        return response

    def _get(self, path: str, params: dict | None, token: str) -> requests.Response:
        response = self._session.get(f"{self._base}{path}", params=params, timeout=self._timeout,
                                     headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
        if response.status_code == 429:
            self._budget.shrink(retry_after_seconds(response.headers) or 1.0)
        return response

    def _token(self, stale: str | None = None) -> str:
        """The cached token, unless it is `stale`; then (or when none is cached) a new login, by
        one worker at a time: the others wait for its token instead of logging in too."""
        cached = self._cached()
        if cached and cached != stale:
            return cached
        if self._redis is None:
            with _local_lock:
                cached = _local_tokens.get(self._token_key)
                if not cached or cached == stale:
                    cached = _local_tokens[self._token_key] = self._new_token()
                return cached
        lock = self._redis.lock(f"{self._token_key}:login", timeout=LOGIN_LOCK_TTL, blocking_timeout=LOGIN_LOCK_TTL)
        locked = lock.acquire()  # False after the wait: log in anyway rather than fail
        try:
            cached = self._cached()
            if cached and cached != stale:
                return cached
            token = self._new_token()
            self._redis.set(self._token_key, token, ex=TOKEN_TTL)
            return token
        finally:
            if locked:
                try:
                    lock.release()
                except LockError:  # held longer than its TTL: it expired on its own
                    pass

    def _cached(self) -> str | None:
        if self._redis is None:
            with _local_lock:
                return _local_tokens.get(self._token_key)
        value = self._redis.get(self._token_key)
        return value.decode() if isinstance(value, bytes) else value

    def _new_token(self) -> str:
        """A login: a request of the budget too, and a call through the breaker."""
        self._budget.acquire(FOLLOW_UP_WAIT)
        return breaker("series_api").call(self._login)

    def _login(self) -> str:
        log.info("logging in to the series API")
        response = self._session.post(f"{self._base}/login", json={"apikey": self._api_key}, timeout=self._timeout)
        response.raise_for_status()
        try:
            token = response.json()["data"]["token"]
        except (ValueError, KeyError, TypeError):
            raise JobError("ERR_INVALID_RESPONSE", "series API login answered without a token") from None
        if not isinstance(token, str) or not token:
            raise JobError("ERR_INVALID_RESPONSE", "series API login answered without a token")
        return token
