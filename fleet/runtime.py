"""What every Fleet process does before its work: settings, logging, database, broker."""
from __future__ import annotations

import dramatiq

from db.database import bind_database
from fleet.broker import build_broker
from fleet.logs import configure_logging
from fleet.settings import Settings, get_settings

_booted: Settings | None = None


def boot(settings: Settings | None = None) -> Settings:
    """Bind the database and install the broker; once a process (again if settings change)."""
    global _booted
    settings = settings or get_settings()
    if _booted is settings:
        return settings
    configure_logging(settings)
    bind_database(settings.database_url)
    dramatiq.set_broker(build_broker(settings))
    _booted = settings
    return settings
