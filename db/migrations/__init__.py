"""One module a schema version, `NNNN_name.py`, applied in order by `fleet db migrate`.

Each migration freezes the tables it creates, so later model changes never alter
what an old migration does.
"""
