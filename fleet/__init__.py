"""Fleet: background jobs on Dramatiq you can trust with production.

This package is the `fleet` command (`fleet.cli`); the core every process shares is
the `core` package, the domains and the job runtime live in `actors`.
"""

__version__ = "0.1.0"
