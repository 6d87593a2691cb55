"""Small helpers the tests share: run the real `fleet` command, wait for a condition."""
from __future__ import annotations

import subprocess
import sys
import time


def fleet(*args: str, env: dict | None = None, input: str | None = None, timeout: float = 60, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "fleet", *args],
        env=env, input=input, capture_output=True, text=True, timeout=timeout, cwd=cwd,
    )


def wait_for(condition, timeout: float = 20, interval: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")
