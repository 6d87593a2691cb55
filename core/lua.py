"""Lua scripts kept as `.lua` files in a `lua/` folder beside the module that runs them: read once,
registered with Redis on first use and run by EVALSHA (loaded again on a server that lost it), as
Dramatiq's RedisBroker does with its own."""
from __future__ import annotations

from pathlib import Path


class LuaScript:
    def __init__(self, *paths: Path):
        self.source = "\n".join(path.read_text() for path in paths)  # parts are concatenated, in order
        self._registered = None

    def __call__(self, client, keys=(), args=()):
        """Run the script on `client` (a Redis client or a pipeline)."""
        if self._registered is None:
            self._registered = client.register_script(self.source)
        return self._registered(keys=list(keys), args=list(args), client=client)


def lua(module_file: str, *names: str) -> LuaScript:
    """The script `lua/<name>.lua` beside `module_file` (several names: their texts joined)."""
    folder = Path(module_file).resolve().parent / "lua"
    return LuaScript(*(folder / f"{name}.lua" for name in names))
