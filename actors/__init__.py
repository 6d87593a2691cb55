"""Dramatiq actors, a module (or a package, for the larger ones) a domain, and Fleet's middleware (`actors.middleware`).

`actors.all` is what worker processes import: it boots Fleet and declares every actor.
"""
