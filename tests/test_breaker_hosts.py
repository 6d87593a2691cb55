"""A fault is blamed where it is: two hosts of one fleet, told apart by their host identity in this
process, share the test Redis; one host's failing calls hold back that host alone, and the
fleet-wide breaker opens only when the service fails from more than one host (or from the only
host there is). tests/test_hosts.py does the same with real hosts in network namespaces."""
from __future__ import annotations

import pybreaker
import pytest

from core.breakers import breaker, forget_breakers, held_back, host_breaker, seconds_to_wait
from core.errors import JobError
from core.state import state_redis


@pytest.fixture(autouse=True)
def fresh_breakers(settings):
    def clear():
        redis = state_redis()
        for pattern in ("fleet:breaker:*", "fleet:workers"):
            for key in redis.scan_iter(pattern):
                redis.delete(key)
        forget_breakers()

    clear()
    yield
    clear()


def _down():
    raise JobError("ERR_CONNECTION", "could not reach api.openai.com: no route to host")


def _fail(host: str, times: int = 3) -> None:
    for _ in range(times):
        with pytest.raises((JobError, pybreaker.CircuitBreakerError)):
            host_breaker("openai", host).call(_down)


def test_one_hosts_failures_hold_back_that_host_alone(settings):
    assert host_breaker("openai", "host-b").call(lambda: "answered") == "answered"  # host-b reaches the service
    _fail("host-a")

    assert host_breaker("openai", "host-a").current_state == "open"
    assert breaker("openai").current_state == "closed"
    assert seconds_to_wait("openai", "host-a") > 0
    assert seconds_to_wait("openai", "host-b") == 0
    assert host_breaker("openai", "host-b").call(lambda: "still answered") == "still answered"
    [found] = held_back()
    assert (found.service, found.host, found.code) == ("openai", "host-a", "ERR_CONNECTION")
    assert "no route to host" in found.message


def test_the_fleet_breaker_opens_when_a_second_host_fails_too(settings):
    host_breaker("openai", "host-b").call(lambda: "answered")
    _fail("host-a")
    assert breaker("openai").current_state == "closed"
    _fail("host-b")
    assert breaker("openai").current_state == "open"
    assert seconds_to_wait("openai", "host-c") > 0  # every host's jobs wait now
    forget_breakers()  # a fresh process sees it in Redis
    with pytest.raises(pybreaker.CircuitBreakerError):
        breaker("openai").call(lambda: "not called")


def test_the_only_host_there_is_opens_the_fleet_breaker(settings):
    _fail("host-a")
    assert breaker("openai").current_state == "open"


def test_a_live_worker_on_another_host_counts_though_it_made_no_call(settings):
    """Hosts are known from the workers' presence records too: host-b's worker is live, so host-a's
    failures are host-a's."""
    import time

    state_redis().zadd("fleet:workers", {"host-b~1a2b:4242:7f00": time.time()})
    _fail("host-a")
    assert breaker("openai").current_state == "closed"
    assert [h.host for h in held_back()] == ["host-a"]


def test_a_held_back_host_closes_again_when_its_trial_succeeds(settings):
    import time

    host_breaker("openai", "host-b").call(lambda: "answered")
    _fail("host-a")
    time.sleep(settings.circuit_reset + 0.2)  # FLEET_CIRCUIT_RESET is 2 s in the tests
    assert host_breaker("openai", "host-a").call(lambda: "back") == "back"
    assert host_breaker("openai", "host-a").current_state == "closed"
    assert held_back() == []


def test_dashboard_and_healthz_say_which_host_is_held_back_and_why(admin_client, settings):
    host_breaker("openai", "host-b").call(lambda: "answered")
    _fail("host-a")
    page = admin_client.get("/admin/").text
    table = page.split('id="held-back">', 1)[1].split("</table>", 1)[0]
    assert "<td>openai</td><td>host-a</td>" in table and "ERR_CONNECTION" in table and "no route to host" in table
    body = admin_client.get("/healthz").json
    assert body["checks"]["breakers"]["states"]["openai"] == "closed"
    assert body["checks"]["breakers"]["error"] == "openai held back on host host-a (ERR_CONNECTION)"
    assert "breakers" in body["degraded"]


def test_the_default_alert_rules_tell_of_a_held_back_host_not_of_an_outage(settings):
    from actors.alerts.conditions import findings
    from actors.alerts.rules import load_rules

    rules = load_rules("default").rules
    host_breaker("openai", "host-b").call(lambda: "answered")
    _fail("host-a")
    [found] = findings(rules["host-held-back"])
    assert found.subject == "openai@host-a" and found.labels["error_code"] == "ERR_CONNECTION"
    assert findings(rules["breaker-open"]) == []  # the provider answers the other host: no outage
