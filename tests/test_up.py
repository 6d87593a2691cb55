"""`fleet up` as a user runs it: a real supervisord, embedded Redis, worker, scheduler, web."""
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import redis
import requests

from fleet.net import free_port
from tests.helpers import fleet, wait_for


@pytest.fixture
def embedded_env(fleet_env):
    env = dict(fleet_env)
    env.pop("BROKER_URL")
    return env


def _start_up(env, port, *extra):
    return subprocess.Popen([sys.executable, "-m", "fleet", "up", "--port", str(port), *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _healthy(port):
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def test_fleet_up_serves_the_panel_refuses_a_second_fleet_and_stops_cleanly(embedded_env, tmp_path):
    port = free_port()
    up = _start_up(embedded_env, port, "--demo")
    try:
        wait_for(lambda: _healthy(port), timeout=40, message="/healthz 200")
        login = requests.get(f"http://127.0.0.1:{port}/admin/", timeout=5)
        assert login.url.endswith("/admin/login?next=/admin/") and "Fleet panel" in login.text

        sock = tmp_path / "var" / "redis.sock"
        embedded = redis.Redis(unix_socket_path=str(sock))
        assert embedded.config_get("appendonly")["appendonly"] == "yes"
        assert embedded.config_get("port")["port"] == "0"

        second = fleet("up", "--port", str(free_port()), env=embedded_env, timeout=30)
        assert second.returncode == 1
        assert "a fleet is already running on" in second.stderr

        tree = psutil.Process(up.pid).children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in tree)
        for part in ("redis-server", "dramatiq actors", "fleet scheduler", "fleet web"):
            assert part in names
    finally:
        started = time.monotonic()
        up.send_signal(signal.SIGTERM)
        output = up.communicate(timeout=20)[0]
    assert time.monotonic() - started < 10, output
    assert up.returncode == 0, output
    gone, alive = psutil.wait_procs(tree, timeout=2)
    assert alive == []
    assert "demo login admin@fleet.local" in output


def test_port_in_use_is_one_line_and_starts_nothing(embedded_env, tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = fleet("up", "--port", str(port), env=embedded_env, timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip() == f"fleet: port {port} on 127.0.0.1 is in use (Address already in use); choose another with --port"
    assert not (tmp_path / "var" / "supervisord.conf").exists()


def test_fleet_up_with_external_broker_down_starts_nothing(fleet_env, tmp_path):
    env = dict(fleet_env, BROKER_URL=f"redis://127.0.0.1:{free_port()}/0")
    result = fleet("up", "--port", str(free_port()), env=env, timeout=30)
    assert result.returncode == 1 and "broker unreachable" in result.stderr
    assert not (tmp_path / "var" / "supervisord.conf").exists()


def test_fleet_redis_refuses_when_broker_url_is_set(fleet_env):
    result = fleet("redis", env=fleet_env)
    assert result.returncode == 2
    assert "BROKER_URL is set" in result.stderr


def test_unknown_command_and_option_are_usage_errors(fleet_env):
    assert fleet("nope", env=fleet_env).returncode == 2
    bad = fleet("worker", "--frobnicate", env=fleet_env)
    assert bad.returncode == 2 and "No such option" in bad.stderr
