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
from tests.test_schedule import note_entry, write

WHY_NOT = unavailable()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")

WINDOW = 6  # seconds of work counted before and after a fault (the counts compared, not timings)
SHORT = {
    "FLEET_HEARTBEAT_TIMEOUT": "8",  # a cut-off host's messages go back after 8 s
    "FLEET_RETRY_DELAYS": "1,2,3",
    "OPENAI_TIMEOUT": "15",  # a call cut off mid-way gives up within the partition
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
    # its calls cannot get through and its jobs go to the others: at most, for each of its two
    # threads, a call in flight as the route went and a job finished whose row the JobLog writer
    # had not flushed yet when the count began
    assert after.get(c.name, 0) <= 2 * 2, after
    [why] = held_back(redis, ["openai"], 60)
    assert why.code == "ERR_CONNECTION", why


def _all_generated(fleet: NetnsFleet, total: int, timeout: float) -> dict:
    return wait_for(lambda: (d := fleet.days()) and d.get("generated", 0) == total and d, timeout=timeout,
                    message=f"{total} days generated")


@pytest.mark.parametrize("netns_fleet", [2], indirect=True)
def test_a_three_second_blip_of_one_hosts_link_loses_nothing(netns_fleet):
    fleet = netns_fleet
    a, b = fleet.hosts.hosts
    for host in (a, b):
        fleet.start_worker(host, processes=1, threads=2)
    fleet.load(80)
    wait_for(lambda: all(fleet.successes().get(h.name, 0) >= 3 for h in (a, b)), timeout=60,
             message="both hosts at work")
    fleet.hosts.cut(b)
    time.sleep(3)
    fleet.hosts.restore(b)
    done_before = fleet.successes().get(b.name, 0)

    days = _all_generated(fleet, 80, timeout=90)
    assert days == {"generated": 80}  # none failed, none left pending
    assert fleet.successes().get(b.name, 0) > done_before  # the blipped host went on working
    statuses = wait_for(lambda: (s := fleet.job_statuses()) and s.get("success") == 80 and s, timeout=20,
                        message=f"80 successes in the JobLog: {fleet.job_statuses()}")
    assert statuses.get("failed", 0) == 0, statuses


PARTITION = 60  # seconds one host is cut off


def _led_by(host, ledger) -> bool:
    return any((scheduler or "").startswith(f"{host.name}~") for _, _, scheduler in ledger)


@pytest.mark.parametrize("netns_fleet", [2], indirect=True)
def test_a_sixty_second_partition_of_one_host_loses_nothing_and_runs_at_most_its_threads_twice(netns_fleet):
    """The cut host's messages go back after the heartbeat timeout and the other host runs
    them; when the link returns, its stale copies are fenced (they call and settle nothing
    more), and it is back at work. Duplicate provider calls: at most the calls the cut host
    had in flight, one a thread. The cut host's scheduler led: the other host's takes over
    without a slot missed."""
    fleet = netns_fleet
    a, b = fleet.hosts.hosts
    threads = 2
    for host in (a, b):
        fleet.start_worker(host, processes=1, threads=threads)
    schedule = write(fleet.workdir, note_entry("tick", 'every = "1s"', "without_overlapping = false"))
    fleet.start_scheduler(b, schedule)
    wait_for(lambda: _led_by(b, fleet.ledger("tick")), timeout=60, message="the scheduler of the host to cut leads")
    fleet.start_scheduler(a, schedule)
    fleet.load(150)
    wait_for(lambda: all(fleet.successes().get(h.name, 0) >= 3 for h in (a, b)), timeout=60,
             message="both hosts at work")
    fleet.hosts.cut(b)
    time.sleep(PARTITION)
    fleet.hosts.restore(b)
    back_from = fleet.successes().get(b.name, 0)
    fleet.load(40)
    wait_for(lambda: fleet.successes().get(b.name, 0) > back_from, timeout=30,
             message="the cut host back at work within 30 s of its link's return")

    assert _all_generated(fleet, 190, timeout=120) == {"generated": 190}
    statuses = wait_for(lambda: (s := fleet.job_statuses()) and s.get("success") == 190 and s, timeout=20,
                        message=f"each job settled once: {fleet.job_statuses()}")
    assert statuses.get("failed", 0) == 0, statuses
    duplicates = fleet.provider_calls() - 190
    print(f"partition of {PARTITION} s: {duplicates} duplicate provider call(s); JobLog {statuses}")
    assert 0 <= duplicates <= threads, duplicates

    ledger = fleet.ledger("tick")
    assert _led_by(a, ledger), "the other host's scheduler took over"
    assert [row for row in ledger if row[1] == "missed"] == []
    slots = [slot for slot, _, _ in ledger]
    assert [(later - earlier).total_seconds() for earlier, later in zip(slots, slots[1:])] == [1.0] * (len(slots) - 1)
