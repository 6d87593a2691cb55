"""Scale-out for real: hosts in network namespaces (tests/netns.py), each with its own host name
and a real `fleet worker`, sharing a private Redis, PostgreSQL and the OpenAI simulator over
their veth links. A host's own fault stays its own; a cut link loses nothing.

Needs root and `ip` (CI runs as root); skips with the reason elsewhere.
"""
from __future__ import annotations

import time

import pytest

from tests.conftest import TEST_OPENAI_KEY
from tests.helpers import wait_for
from tests.netns import Hosts, NetnsFleet, unavailable

WHY_NOT = unavailable()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")

WINDOW = 6  # seconds of work counted before and after a fault (the counts compared, not timings)
SHORT = {
    "FLEET_HEARTBEAT_TIMEOUT": "8",  # a cut-off host's messages go back after 8 s
    "FLEET_RETRY_DELAYS": "1,2,3",
}


@pytest.fixture
def netns_fleet(request, tmp_path, own_postgres_url, processes):
    count = getattr(request, "param", 3)
    with Hosts(count) as hosts, NetnsFleet(hosts, tmp_path, own_postgres_url, processes, api_key=TEST_OPENAI_KEY,
                                           latency_ms=200, env=SHORT) as fleet:
        yield fleet


def _counted(fleet: NetnsFleet, seconds: float, watch=None) -> dict[str, int]:
    """Jobs each host completed in the next `seconds` (`watch` called every quarter second)."""
    before = fleet.successes()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if watch:
            watch()
        time.sleep(0.25)
    after = fleet.successes()
    return {host: after.get(host, 0) - before.get(host, 0) for host in after}


def test_a_host_cut_off_from_the_provider_alone_holds_back_itself_and_the_others_keep_their_rate(netns_fleet):
    from core.breaker_hosts import held_back

    fleet = netns_fleet
    a, b, c = fleet.hosts.hosts
    for host in (a, b, c):
        fleet.start_worker(host, processes=1, threads=2)
    fleet.load(1500)
    wait_for(lambda: all(fleet.successes().get(h.name, 0) >= 3 for h in (a, b, c)), timeout=60,
             message="every host at work")
    before = _counted(fleet, WINDOW)
    assert all(before.get(h.name, 0) > 0 for h in (a, b, c)), before

    fleet.hosts.cut_provider(c)
    redis = fleet.state_redis()
    wait_for(lambda: [h.host for h in held_back(redis, ["openai"], 60)] == [c.name], timeout=30,
             message="the cut host held back")
    states = []
    after = _counted(fleet, WINDOW, watch=lambda: states.append(fleet.fleet_breaker()))

    assert set(states) == {"closed"}  # the fleet's breaker never opened
    for host in (a, b):
        assert after.get(host.name, 0) >= 0.5 * before[host.name], (before, after)
    assert after.get(c.name, 0) == 0, after  # its calls cannot get through; its jobs wait for others
    [why] = held_back(redis, ["openai"], 60)
    assert why.code == "ERR_CONNECTION", why
