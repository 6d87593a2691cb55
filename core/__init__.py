"""The core every Fleet process shares: settings, broker, boot, errors, logs, trace ids,
redaction, the state Redis, circuit breakers, the API clients and their simulators.

It knows nothing of the domains, the job runtime or the entry points above it.
"""
