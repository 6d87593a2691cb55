"""Boot Fleet (settings, database, broker) and declare every actor on its broker.

`fleet worker` runs `dramatiq actors.all`, so each worker process imports this first.
"""
from fleet.runtime import boot

boot()

from actors import system, workouts  # noqa: E402,F401
from admin import bulk  # noqa: E402,F401  (the panel's background retries)
