"""Prometheus counters of every attempt, kept by the worker processes themselves, so /metrics
never counts the JobLog.

`fleet_jobs_total{actor,queue,status}` and `fleet_job_duration_seconds{actor,status}` (a
histogram), and `fleet_queue_wait_seconds{queue}` (a histogram of the time from a message
being ready, sent or its delay over, to a worker starting it) use prometheus_client's multiprocess mode: each worker process writes its values
to memory-mapped files in `var/metrics/` (PROMETHEUS_MULTIPROC_DIR), and /metrics adds up the
files of every process, dead ones included, so counters only grow. The files are per machine:
a /metrics sees the workers that share its var/ directory (see the README's operations notes).

A memory-mapped file is sparse as prometheus_client makes it: writing to a page the file system
cannot back (a full disk) kills the process with SIGBUS. A file grows only when a label set is
counted for the first time (values change in place), so before this process counts a new label
set every file of it has its space allocated (posix_fallocate) ahead of what prometheus_client
writes; when the disk cannot give it, the count is skipped with a warning, the job runs on, and
counting resumes once there is space again.
"""
from __future__ import annotations

import logging
import os
import struct
import threading
import time
from pathlib import Path

from dramatiq.middleware import Middleware

from actors.middleware.outcome import get_outcome

log = logging.getLogger("fleet.metrics")

FILE_KINDS = ("counter", "histogram")  # prometheus_client's files: <kind>_<pid>.db
ALLOCATED = 1 << 16  # bytes allocated for each file at first (prometheus_client's own first size)
HEADROOM = 1 << 16  # allocated bytes kept ahead of the file's used part; a new label set needs < 5 KB
BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

_lock = threading.Lock()
_metrics: tuple | None = None  # (counter, histogram, queue-wait histogram), once a process
_directory: Path | None = None  # where they are kept


def multiprocess_metrics(directory: Path):
    """This process's counter and histogram, writing into `directory` (made on first use).

    One directory a process, the first one asked for: prometheus_client reads it from the
    environment whenever it opens a file, so changing it later would split the counts."""
    global _metrics, _directory
    with _lock:
        if _metrics is None:
            from prometheus_client import CollectorRegistry, Counter, Histogram, values

            directory.mkdir(parents=True, exist_ok=True)
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)  # not an inherited one: ours
            values.ValueClass = values.MultiProcessValue()
            registry = CollectorRegistry()  # not the global one: these are read from the files
            counter = Counter("fleet_jobs", "Attempts of jobs, by actor, queue and how they ended.",
                              ["actor", "queue", "status"], registry=registry)
            histogram = Histogram("fleet_job_duration_seconds", "Duration of attempts, by actor and how they ended.",
                                  ["actor", "status"], buckets=BUCKETS, registry=registry)
            waits = Histogram("fleet_queue_wait_seconds", "Time from a message being ready (sent, or its delay "
                              "over) to a worker starting it, by queue.", ["queue"], buckets=BUCKETS,
                              registry=registry)
            _metrics, _directory = (counter, histogram, waits), directory
        return _metrics


class PrometheusMetrics(Middleware):
    def __init__(self, directory: Path):
        self.directory = directory
        self._started = threading.local()
        self._paused = False  # the disk had no room for the files: counts are skipped
        self._counted: set[tuple] = set()  # label sets this process has room for (and has counted)

    def before_process_message(self, broker, message):
        self._started.at = time.monotonic()
        if not self._room(("wait", message.queue_name)):
            return
        ready_at = max(message.message_timestamp, message.options.get("eta") or 0) / 1000
        waits = multiprocess_metrics(self.directory)[2]
        waits.labels(message.queue_name).observe(max(0.0, time.time() - ready_at))

    def after_process_message(self, broker, message, *, result=None, exception=None):
        outcome = get_outcome(message)
        status = outcome.status if outcome else ("success" if exception is None else "failed")
        self._count(message, status)

    def after_skip_message(self, broker, message):
        outcome = get_outcome(message)
        self._count(message, outcome.status if outcome else "deferred")

    def _count(self, message, status: str) -> None:
        started = getattr(self._started, "at", None)
        self._started.at = None
        if not self._room((message.actor_name, message.queue_name, status)):
            return
        counter, histogram, _ = multiprocess_metrics(self.directory)
        counter.labels(message.actor_name, message.queue_name, status).inc()
        if started is not None:
            histogram.labels(message.actor_name, status).observe(time.monotonic() - started)

    def _room(self, labels: tuple) -> bool:
        """Is the space prometheus_client may write for `labels` allocated on disk (allocating it
        if not)? Asked of the disk for a label set not counted before only."""
        if labels in self._counted:
            return True
        directory = _directory or self.directory
        try:
            for kind in FILE_KINDS:
                allocate_ahead(directory / f"{kind}_{os.getpid()}.db")
        except OSError as exc:
            if not self._paused:
                log.warning("metrics paused: no space for the counters' files; jobs run on, counting resumes "
                            "when there is space", extra={"directory": str(directory), "error": exc.strerror})
            self._paused = True
            return False
        if self._paused:
            log.warning("metrics counting again", extra={"directory": str(directory)})
            self._paused = False
        self._counted.add(labels)
        return True


def allocate_ahead(path: Path) -> None:
    """Allocate the file's blocks up to HEADROOM past its used part (at least ALLOCATED bytes);
    OSError (ENOSPC) when the file system cannot."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        header = os.pread(fd, 4, 0)
        used = struct.unpack("i", header)[0] if len(header) == 4 else 0
        size = os.fstat(fd).st_size
        wanted = max(ALLOCATED, used + HEADROOM, size)
        os.posix_fallocate(fd, 0, wanted)  # glibc writes zeros where the file system cannot allocate
    finally:
        os.close(fd)

