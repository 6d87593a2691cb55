"""What both simulators share: the WSGI base with `/_control`, the fault flow, the server.

Served by werkzeug's threaded server, so a request told to hang blocks only its own thread.
"""
from __future__ import annotations

import json
import threading

import requests
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from core.errors import FleetError
from core.net import ensure_port_free
from core.simulators.faults import FaultState

HTTP_FAULTS = {"401": 401, "429": 429, "quota": 429, "500": 500, "502": 502, "503": 503}


def json_response(body, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(body), status=status, headers=headers, mimetype="application/json")


class SimulatorApp:
    """The API routes of a subclass, plus `GET|POST /_control` and `POST /_control/reset`."""

    rules: list[Rule] = []

    def __init__(self, faults: FaultState):
        self.faults = faults
        self.stopping = threading.Event()
        self.url_map = Map([Rule("/_control", endpoint="control", methods=["GET", "POST"]),
                            Rule("/_control/reset", endpoint="reset", methods=["POST"]),
                            *(rule.empty() for rule in self.rules)])

    def __call__(self, environ, start_response):
        request = Request(environ)
        try:
            endpoint, args = self.url_map.bind_to_environ(environ).match()
            response = getattr(self, f"on_{endpoint}")(request, **args)
        except HTTPException as exc:
            response = self.error(exc.code, exc.description)
        return response(environ, start_response)

    # -- what subclasses provide -------------------------------------------------------
    def error(self, status: int, message: str, fault: str | None = None) -> Response:
        raise NotImplementedError

    def apply_control(self, changes: dict) -> None:
        self.faults.update(changes)

    def describe(self) -> dict:
        return self.faults.snapshot()

    # -- control -----------------------------------------------------------------------
    def on_control(self, request: Request) -> Response:
        if request.method == "POST":
            changes = request.get_json(silent=True)
            if not isinstance(changes, dict):
                return json_response({"error": "expected a JSON object"}, 400)
            try:
                self.apply_control(dict(changes))
            except ValueError as exc:
                return json_response({"error": str(exc)}, 400)
        return json_response(self.describe())

    def on_reset(self, request: Request) -> Response:
        self.faults.reset()
        return json_response(self.describe())

    # -- the fault flow of an API request ------------------------------------------------
    def pause(self, seconds: float) -> None:
        """Sleep that ends early when the server stops."""
        self.stopping.wait(seconds)

    def inject(self) -> tuple[str, Response | None]:
        """Latency, then this request's outcome, and the response when it is a fault.

        Faults are recorded here; "ok" and "malformed" come back without a response, for
        the endpoint to answer (and spoil), and to record once it knows the result.
        """
        config = self.faults.config
        self.pause(config["latency_ms"] / 1000)
        outcome = self.faults.draw()
        if outcome not in ("ok", "malformed"):
            self.faults.record(outcome)
        if outcome == "timeout":
            self.pause(config["hang_seconds"])
            return outcome, self.error(504, "The upstream timed out.", "timeout")
        if outcome in HTTP_FAULTS:
            response = self.error(HTTP_FAULTS[outcome], f"Simulated fault {outcome}.", outcome)
            if outcome == "429":
                response.headers["Retry-After"] = f"{config['retry_after']:g}"
            return outcome, response
        return outcome, None


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code="-", size="-") -> None:  # one line a request drowns the fleet's logs
        pass


class SimulatorControl:
    """Talks to a running simulator's `/_control` endpoint (in-process or a `fleet simulate`)."""

    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/")

    def control(self, **changes) -> dict:
        response = requests.post(f"{self.base_url}/_control", json=changes, timeout=5)
        if response.status_code == 400:
            raise ValueError(response.json()["error"])
        response.raise_for_status()
        return response.json()

    def config(self) -> dict:
        return self._get()["config"]

    def stats(self) -> dict:
        return self._get()["stats"]

    def reset(self) -> dict:
        response = requests.post(f"{self.base_url}/_control/reset", timeout=5)
        response.raise_for_status()
        return response.json()

    def _get(self) -> dict:
        response = requests.get(f"{self.base_url}/_control", timeout=5)
        response.raise_for_status()
        return response.json()


class SimulatorServer(SimulatorControl):
    """A simulator served in a daemon thread; `url` is what a client is configured with."""

    def __init__(self, app: SimulatorApp, *, host: str = "127.0.0.1", port: int = 0, api_path: str = ""):
        self.app = app
        self._server = make_server(host, port, app, threaded=True, request_handler=_QuietHandler)
        self._server.block_on_close = False
        super().__init__(f"http://{host}:{self._server.server_port}")
        self.url = self.base_url + api_path
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"simulator-{self.url}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.app.stopping.set()
        self._server.shutdown()
        self._thread.join(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_forever(app: SimulatorApp, host: str, port: int, banner: str) -> None:
    """Serve in the foreground until interrupted (`fleet simulate …`)."""
    ensure_port_free(host, port)
    try:
        server = make_server(host, port, app, threaded=True, request_handler=_QuietHandler)
    except OSError as exc:
        raise FleetError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    server.block_on_close = False
    print(banner, flush=True)
    server.serve_forever()
