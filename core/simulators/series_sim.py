"""A series data API in the shape of TheTVDB v4: `POST /login`, then bearer-token reads.

Records are made up deterministically from the id. Episode `S*100 + k` is episode k of
series S, so a series' episode list and each episode's `seriesId` agree. Ids in `missing`,
and a share `missing_ratio` of all ids (the same ids on every run), answer 404.
"""
from __future__ import annotations

import json
import random
import secrets
import threading
import zlib

from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from core.simulators.faults import FaultState
from core.simulators.server import SimulatorApp, SimulatorServer, json_response

WORDS = ("amber bridge coast dawn ember falcon garden harbor island jade kingdom lantern meadow "
         "night orchard prairie quartz river summit tide union valley winter").split()
EPISODES_PER_SEASON = 6


def _title(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).title()


def _date(rng: random.Random, year: int) -> str:
    return f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def episode_record(episode_id: int) -> dict:
    rng = random.Random(f"episode:{episode_id}")
    series_id, k = max(1, episode_id // 100), max(1, episode_id % 100)
    season, number = (k - 1) // EPISODES_PER_SEASON + 1, (k - 1) % EPISODES_PER_SEASON + 1
    name = _title(rng, 3)
    return {
        "id": episode_id,
        "seriesId": series_id,
        "name": name,
        "aired": f"{2000 + series_id % 20 + season - 1}-{2 * number - 1:02d}-{rng.randint(1, 28):02d}",
        "runtime": rng.choice((22, 30, 45, 60)),
        "overview": f"In '{name}', {_title(rng, 4).lower()} changes everything.",
        "seasonNumber": season,
        "number": number,
        "isMovie": 0,
        "lastUpdated": "2024-06-01 12:00:00",
    }


def series_record(series_id: int, with_episodes: bool = False) -> dict:
    rng = random.Random(f"series:{series_id}")
    name = _title(rng, 2)
    year = 2000 + series_id % 20
    count = rng.randint(4, 14)
    ended = rng.random() < 0.4
    record = {
        "id": series_id,
        "name": name,
        "slug": name.lower().replace(" ", "-"),
        "overview": f"{name}: a story of {_title(rng, 3).lower()}.",
        "firstAired": _date(rng, year),
        "lastAired": _date(rng, year + (count - 1) // EPISODES_PER_SEASON),
        "year": str(year),
        "status": {"id": 2 if ended else 1, "name": "Ended" if ended else "Continuing",
                   "recordType": "series", "keepUpdated": not ended},
        "originalCountry": "usa",
        "originalLanguage": "eng",
        "averageRuntime": rng.choice((22, 30, 45, 60)),
        "episodeCount": count,
        "seasons": [{"id": series_id * 10 + s, "seriesId": series_id, "number": s,
                     "type": {"id": 1, "name": "Aired Order", "type": "official"}}
                    for s in range(1, (count - 1) // EPISODES_PER_SEASON + 2)],
        "lastUpdated": "2024-06-01 12:00:00",
    }
    if with_episodes:
        record["episodes"] = [episode_record(series_id * 100 + k) for k in range(1, count + 1)]
    return record


def missing_by_ratio(item_id: int, ratio: float) -> bool:
    """Whether `item_id` is among the share `ratio` of ids the API does not know (deterministic)."""
    return ratio > 0 and zlib.crc32(f"missing:{item_id}".encode()) % 10_000 < ratio * 10_000


def failure(status: int, message: str, headers: dict | None = None) -> Response:
    return json_response({"status": "failure", "message": message, "data": None}, status, headers)


class SeriesSimulator(SimulatorApp):
    rules = [Rule("/login", endpoint="login", methods=["POST"]),
             Rule("/series/<item_id>/extended", endpoint="series"),
             Rule("/episodes/<item_id>/extended", endpoint="episode")]

    def __init__(self, faults: FaultState, api_key: str | None = None, missing: set[int] | frozenset = frozenset(),
                 missing_ratio: float = 0.0):
        super().__init__(faults)
        self.api_key = api_key
        self.missing = set(missing)
        self.missing_ratio = missing_ratio
        self._initial_missing = (set(missing), missing_ratio)
        self._tokens: set[str] = set()
        self._tokens_lock = threading.Lock()

    def error(self, status: int, message: str, fault: str | None = None) -> Response:
        return failure(status, message)

    def apply_control(self, changes: dict) -> None:
        missing = changes.pop("missing", None)
        ratio = changes.pop("missing_ratio", None)
        expire = changes.pop("expire_tokens", False)
        if missing is not None and (not isinstance(missing, list) or not all(isinstance(i, int) for i in missing)):
            raise ValueError("missing must be a list of ids")
        if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio <= 1):
            raise ValueError("missing_ratio must be a number between 0 and 1")
        self.faults.update(changes)
        if missing is not None:
            self.missing = set(missing)
        if ratio is not None:
            self.missing_ratio = float(ratio)
        if expire:
            with self._tokens_lock:
                self._tokens.clear()

    def describe(self) -> dict:
        described = super().describe()
        described["config"]["missing"] = sorted(self.missing)
        described["config"]["missing_ratio"] = self.missing_ratio
        with self._tokens_lock:
            described["stats"]["tokens"] = len(self._tokens)
        return described

    def on_reset(self, request: Request) -> Response:
        missing, self.missing_ratio = self._initial_missing
        self.missing = set(missing)  # tokens stay valid: a reset is about faults and counters
        return super().on_reset(request)

    def on_login(self, request: Request) -> Response:
        self.faults.count_event("logins")
        body = request.get_json(silent=True)
        key = body.get("apikey") if isinstance(body, dict) else None
        if not key or (self.api_key is not None and key != self.api_key):
            return failure(401, "Unauthorized")
        token = secrets.token_urlsafe(32)
        with self._tokens_lock:
            self._tokens.add(token)
        return json_response({"status": "success", "data": {"token": token}})

    def on_series(self, request: Request, item_id: str) -> Response:
        return self._record(request, item_id, lambda i: series_record(i, request.args.get("meta") == "episodes"))

    def on_episode(self, request: Request, item_id: str) -> Response:
        return self._record(request, item_id, episode_record)

    def _record(self, request: Request, item_id: str, build) -> Response:
        self.faults.arrive()
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        with self._tokens_lock:
            known = scheme.lower() == "bearer" and token in self._tokens
        if not known:
            self.faults.record("401")
            return failure(401, "Unauthorized")
        outcome, fault = self.inject()
        if fault:
            return fault
        if not item_id.isdigit():
            self.faults.record("400")
            return failure(400, f"InvalidValueType: id must be an integer, got {item_id!r}")
        if int(item_id) in self.missing or missing_by_ratio(int(item_id), self.missing_ratio):
            self.faults.record("404")
            return failure(404, "NotFoundException: record not found")
        self.faults.record(outcome)
        body = json.dumps({"status": "success", "data": build(int(item_id))})
        if outcome == "malformed":
            body = body[: len(body) // 2]
        return Response(body, mimetype="application/json")


def series_app(*, api_key: str | None = None, missing=(), missing_ratio: float = 0.0, fail: dict | None = None,
               latency_ms: float = 0, retry_after: float = 1, hang_seconds: float = 30,
               seed: int | None = None) -> SeriesSimulator:
    faults = FaultState(fail=fail, latency_ms=latency_ms, retry_after=retry_after, hang_seconds=hang_seconds, seed=seed)
    return SeriesSimulator(faults, api_key=api_key, missing=set(missing), missing_ratio=missing_ratio)


def start_series_simulator(*, host: str = "127.0.0.1", port: int = 0, **options) -> SimulatorServer:
    """Serve a series API simulator in a daemon thread; `.url` is the SERIES_API_URL to use."""
    return SimulatorServer(series_app(**options), host=host, port=port)
