"""`fleet scheduler`: a BlockingScheduler that stops cleanly on SIGTERM or Ctrl-C."""
from __future__ import annotations

import logging
import signal

from apscheduler.schedulers.blocking import BlockingScheduler

from core.settings import Settings

log = logging.getLogger("fleet.scheduler")


def build_scheduler(settings: Settings) -> BlockingScheduler:
    return BlockingScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1})


def run(settings: Settings) -> None:
    scheduler = build_scheduler(settings)

    def stop(signum, frame):
        log.info("scheduler stopping", extra={"signal": signal.Signals(signum).name})
        scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("scheduler started", extra={"jobs": len(scheduler.get_jobs())})
    scheduler.start()
    log.info("scheduler stopped")
