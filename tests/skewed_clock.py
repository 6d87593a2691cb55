"""`python -m tests.skewed_clock SECONDS MODULE [ARGS…]`: MODULE (`tests.fleet_with_test_tasks`,
`dramatiq`, …) run as `__main__` in a process whose own wall clock is SECONDS off (ahead when
positive), as on a host whose time sync failed. `time.time`, `time.time_ns` and
`datetime.now`/`utcnow` are shifted before anything else is imported, so every reading of the
wall clock in the process sees it, Fleet's and its libraries' alike; the monotonic clock, the
machine's and Redis's are left alone. Worker processes forked by `dramatiq` inherit it.
(libfaketime would do the same from outside, but its sleeps fail under Python 3.11.)"""
from __future__ import annotations

import datetime as _datetime
import runpy
import sys
import time as _time

_real_time, _real_time_ns, _RealDatetime = _time.time, _time.time_ns, _datetime.datetime


def skew(seconds: float) -> None:
    _time.time = lambda: _real_time() + seconds
    _time.time_ns = lambda: _real_time_ns() + int(seconds * 1e9)

    class AnyDatetime(type):
        # values made elsewhere (drivers, arithmetic) are plain datetimes: still datetimes
        def __instancecheck__(cls, value):
            return isinstance(value, _RealDatetime)

        def __subclasscheck__(cls, other):
            return issubclass(other, _RealDatetime)

    class SkewedDatetime(_RealDatetime, metaclass=AnyDatetime):
        @classmethod
        def now(cls, tz=None):
            return _RealDatetime.fromtimestamp(_time.time(), tz)

        @classmethod
        def utcnow(cls):
            return _RealDatetime.now(_datetime.timezone.utc).replace(tzinfo=None) + _datetime.timedelta(seconds=seconds)

        @classmethod
        def today(cls):
            return cls.now()

    _datetime.datetime = SkewedDatetime


if __name__ == "__main__":
    skew(float(sys.argv[1]))
    module = sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
