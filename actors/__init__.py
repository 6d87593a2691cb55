"""Dramatiq actors, a module a domain. Importing this package installs Fleet's broker.

`dramatiq actors` (what `fleet worker` runs) imports it in every worker process.
"""
from fleet.runtime import boot

boot()

from actors import system  # noqa: E402,F401  (declares the actors on the broker above)
