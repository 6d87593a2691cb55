"""What every Fleet process does before its work: settings, logging, database, broker.

The broker is built here without knowing the job runtime: the caller hands in its
middleware (`actors.runtime.boot` hands in Fleet's).
"""
from __future__ import annotations

from collections.abc import Callable

import dramatiq

from core.broker import build_broker
from core.logs import configure_logging
from core.settings import Settings, get_settings
from db.database import bind_database

_booted: Settings | None = None


def boot(settings: Settings | None = None, *, middleware: Callable[[Settings], list]) -> Settings:
    """Bind the database and install a broker with `middleware(settings)`; once a process
    (again if the settings change)."""
    global _booted
    settings = settings or get_settings()
    if _booted is settings:
        return settings
    configure_logging(settings)
    bind_database(settings.database_url)
    dramatiq.set_broker(build_broker(settings, middleware(settings)))
    _booted = settings
    return settings
