"""A daemon thread that calls a function every so many seconds until it is stopped: a worker's
JobLog flush, its presence heartbeat, the renewal of its schedule locks, its watch over held messages."""
from __future__ import annotations

import threading
from collections.abc import Callable


class Ticker:
    def __init__(self, name: str, tick: Callable[[], None]):
        self.name = name
        self.tick = tick  # handles its own errors: one that escapes ends the thread
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, interval: float) -> None:
        """Call `tick` every `interval` seconds from now on; a thread of an earlier start stops."""
        self._stop.set()
        self._stop = stop = threading.Event()  # this start's: an earlier thread must not outlive its stop
        self._thread = threading.Thread(target=self._run, args=(interval, stop), name=self.name, daemon=True)
        self._thread.start()

    def stop(self, wait: float = 0) -> None:
        """No more ticks; with `wait`, up to that many seconds for the one in hand to end."""
        self._stop.set()
        if wait and self._thread is not None:
            self._thread.join(wait)

    def _run(self, interval: float, stop: threading.Event) -> None:
        while not stop.wait(interval):
            self.tick()
