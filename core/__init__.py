"""The core every Fleet process shares: settings, broker, boot, errors, logs, trace ids,
redaction, the state Redis, circuit breakers, the API clients and their simulators; and the
mechanisms that exist once: the Redis lock (`locks`), Lua scripts (`lua`), this process's id
(`identity`), jitter (`backoff`), a background ticker (`ticker`), time and duration texts (`formats`).

It knows nothing of the domains, the job runtime or the entry points above it.
"""
