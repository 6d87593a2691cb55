"""The trace id and job context of the work at hand, for logs and JobLog rows.

A trace id is made where work starts (CLI, web request, scheduler tick), travels in
each message's options, and is restored in the worker around the actor call.
"""
from __future__ import annotations

import contextlib
import os
import time
from contextvars import ContextVar
from types import MappingProxyType

_context: ContextVar[dict] = ContextVar("fleet_context", default=MappingProxyType({}))  # read-only


def new_trace_id() -> str:
    """16 hex digits: microseconds, then 12 random bits. Time-ordered, so JobLog's trace-id
    index grows at its end instead of splitting pages at random on every insert."""
    return f"{time.time_ns() // 1000:013x}{os.urandom(2).hex()[:3]}"


def current() -> dict:
    return _context.get()


def trace_id() -> str | None:
    return _context.get().get("trace_id")


def set_context(**values) -> object:
    """Replace the context; returns a token for `reset_context`."""
    return _context.set({k: v for k, v in values.items() if v is not None})


def reset_context(token) -> None:
    _context.reset(token)


@contextlib.contextmanager
def traced(trace: str | None = None, **values):
    """Run a block of work under a trace id (a new one unless given)."""
    token = set_context(**{**_context.get(), **values, "trace_id": trace or trace_id() or new_trace_id()})
    try:
        yield trace_id()
    finally:
        reset_context(token)
