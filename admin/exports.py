"""CSV exports: cells a spreadsheet cannot run, and few enough at once that slow readers
cannot hold the web process's threads.

A cell that starts with = + - @ (after any spaces) or a tab or CR gets a leading `'`, and every
cell is quoted. Quoting is not enough for a reader whose locale splits on another separator
(`;` where `,` is written): it splits inside the cell, and the piece after `ok;` begins a cell
of its own. So a trigger after any separator (`,`, `;`, a tab or a line break, then spaces or
quotes) gets its `'` too: `ok;=1+1` is exported as `ok;'=1+1`.

An export streams its rows while the client reads, on one of waitress's threads: a client that
reads slowly holds that thread until it is done. So an account runs at most
PER_ACCOUNT exports at once and the process at most half its threads' worth; past that the
answer is 429 at once, with Retry-After.
"""
from __future__ import annotations

import csv
import re
import threading
from collections import Counter

from flask import current_app

PER_ACCOUNT = 2
DEFAULT_THREADS = 8  # `fleet web`'s default; the app knows its real number from FLEET_WEB_THREADS
RETRY_AFTER = 10  # seconds
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_AFTER_SEPARATOR = re.compile(r"([,;\t\r\n][ \"]*)([=+\-@])")


def csv_safe(value):
    """Keep spreadsheets from running text from outside as a formula, whatever separator they split on."""
    if not isinstance(value, str):
        return value
    value = _AFTER_SEPARATOR.sub(r"\1'\2", value)
    if value[:1] in FORMULA_STARTS or value.lstrip(" ")[:1] in FORMULA_STARTS:
        return "'" + value
    return value


class Echo:
    """A file that hands back what is written to it, for csv.writer to produce one row at a time."""

    def write(self, value: str) -> str:
        return value


def writer():
    return csv.writer(Echo(), quoting=csv.QUOTE_ALL)


class Slots:
    """Exports running in this app (of this process), by account."""

    def __init__(self):
        self._lock = threading.Lock()
        self._running: Counter[int] = Counter()

    def take(self, account_id: int) -> bool:
        limit = max(1, current_app.config.get("FLEET_WEB_THREADS", DEFAULT_THREADS) // 2)
        with self._lock:
            if self._running[account_id] >= PER_ACCOUNT or self._running.total() >= limit:
                return False
            self._running[account_id] += 1
            return True

    def give_back(self, account_id: int) -> None:
        with self._lock:
            self._running[account_id] -= 1
            if self._running[account_id] <= 0:
                del self._running[account_id]


def slots() -> Slots:
    with _creating:
        return current_app.extensions.setdefault("fleet_exports", Slots())


_creating = threading.Lock()
