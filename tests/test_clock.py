"""One clock: a real worker process whose own clock is 5 s ahead (tests.skewed_clock) measures its
offset from Redis TIME at each heartbeat, and the panel shows it: the Health page and /healthz,
the dashboard, /metrics and the `clock_skew` alert rule. (The skewed scheduler is in
test_schedule_daemon.)"""
from __future__ import annotations

import re

from actors.alerts.conditions import WATCHERS
from actors.middleware.presence import live_workers
from core import clock
from core.state import state_redis
from tests.helpers import wait_for


def test_a_worker_with_a_skewed_clock_shows_on_health_the_dashboard_metrics_and_in_an_alert(
        processes, admin_client, broker):
    proc = processes.start("5", "dramatiq", "tests.worker_actors", "--processes", "1", "--threads", "1",
                           "--queues", "tests", module="tests.skewed_clock", name="worker")
    skewed = wait_for(lambda: next((w for w in live_workers(state_redis(), 60) if w.clock_offset > 4), None),
                      timeout=30, message="the skewed worker's heartbeat")
    assert 4.5 < skewed.clock_offset < 5.5
    assert skewed.seconds_ago < 10, "its heartbeat is stamped by the fleet's clock, not 5 s into the future"
    worker_id = next(c.id for c in clock.process_clocks(state_redis()) if c.kind == "worker" and c.offset > 4)

    page = wait_for(lambda: (text := admin_client.get("/admin/health/").text) and worker_id in text and text,
                    message="the Health page names it")
    assert f"worker {worker_id} 5.0 s ahead" in page
    checks = admin_client.get("/healthz").json["checks"]
    assert checks["clock"]["ok"] is False
    assert [s["kind"] for s in checks["clock"]["skewed"]] == ["worker"]

    dashboard = admin_client.get("/admin/").text
    assert re.search(r'fleet-warning">\+5\.0 s</td>', dashboard), "its row in the worker list"
    assert f"<code>{worker_id}</code>: 5.0 s ahead" in dashboard

    metrics = admin_client.get("/metrics").text
    served = re.search(rf'fleet_clock_offset_seconds\{{[^}}]*process="{re.escape(worker_id)}"[^}}]*\}} ([0-9.]+)',
                       metrics)
    assert served and 4.5 < float(served.group(1)) < 5.5
    found = WATCHERS["clock_skew"]({"max_offset": 1.0})
    assert [(f.subject, f.labels["kind"]) for f in found] == [(worker_id, "worker")]
    assert "its clock is 5.0 s ahead of the fleet's (Redis TIME)" in found[0].summary
    assert WATCHERS["clock_skew"]({"max_offset": 10.0}) == []

    processes.stop(proc)
    assert worker_id not in {c.id for c in clock.process_clocks(state_redis())}, "a worker that stops forgets it"
