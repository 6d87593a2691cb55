"""Boot Fleet (settings, database, broker) and declare every actor on its broker.

`fleet worker` runs `dramatiq actors.all`, so each worker process imports this first; so
does every entry point that sends or requeues messages of any actor (a broker that never
declared an actor cannot route its messages).
"""
from actors.runtime import boot

boot()

from actors import (  # noqa: E402,F401
    accounts,
    alerts,
    batches,
    jobs,
    schedule,
    series,
    system,
    translations,
    workout_days,
    workouts,
    workouts_retry,
)
