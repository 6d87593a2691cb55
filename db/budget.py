"""How many database connections each kind of Fleet process may open at most: the pools are
sized from these numbers, and `fleet db connections` adds them up for a described fleet."""
from __future__ import annotations

from dataclasses import dataclass

# A worker process: a connection for each worker thread while it works a message, the JobLog
# writer's while it flushes, and one for the last flush at shutdown (its main thread's, should a
# worker thread still be running then). Presence, held messages and schedule locks use Redis only.
WORKER_EXTRA = 2
# `fleet web`: one a waitress thread while it serves a request, and two spare.
WEB_EXTRA = 2
SCHEDULER = 1  # one thread: its loop holds one connection
CLI = 1  # a `fleet …` command, while it runs


def worker_process(threads: int) -> int:
    return threads + WORKER_EXTRA


def web_process(threads: int) -> int:
    return threads + WEB_EXTRA


@dataclass(frozen=True)
class Fleet:
    """Machines each running `fleet worker -p processes -t threads`, `web` `fleet web` processes
    of `web_threads` threads, `schedulers` schedulers, and room for `cli` commands at once."""

    hosts: int
    processes: int
    threads: int
    web: int
    web_threads: int
    schedulers: int
    cli: int

    @property
    def workers(self) -> int:
        return self.hosts * self.processes * worker_process(self.threads)

    @property
    def webs(self) -> int:
        return self.web * web_process(self.web_threads)

    @property
    def total(self) -> int:
        return self.workers + self.webs + self.schedulers * SCHEDULER + self.cli * CLI

    def threads_that_fit(self, slots: int) -> int:
        """The most threads a worker process may have for this fleet to fit in `slots` (0: none)."""
        rest = slots - self.webs - self.schedulers * SCHEDULER - self.cli * CLI
        return max(0, rest // (self.hosts * self.processes) - WORKER_EXTRA)
