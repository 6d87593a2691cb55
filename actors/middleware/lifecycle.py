"""Dramatiq's worker processes end when its main process does, even when that one is killed."""
from __future__ import annotations

import os

from dramatiq.middleware import Middleware

from core.lifecycle import WORKER_MAIN_ENV, die_with_parent


class DieWithMainProcess(Middleware):
    """`fleet worker` names Dramatiq's main process; each worker process it forks asks for
    SIGTERM (a graceful stop) when that process dies, instead of running on as an orphan."""

    def after_process_boot(self, broker):
        main = os.environ.get(WORKER_MAIN_ENV)
        if main:
            die_with_parent(expected_parent=int(main))
