"""The shipped Prometheus rules and Grafana dashboard use only metrics Fleet's /metrics serves
(scraped after a real worker ran a job and a message waited in a queue), and promtool accepts
the rules (Debian's `prometheus` package ships it)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import wait_for

DOCS = Path(__file__).resolve().parents[1] / "docs"
RULES = DOCS / "prometheus-rules.yml"
DASHBOARD = DOCS / "grafana-dashboard.json"
METRIC = re.compile(r"\b(fleet_[a-z_]+)\b")


def expressions() -> list[str]:
    rules = re.findall(r"expr: \|\n((?:\s{10}.*\n)+)|expr: (.*)", RULES.read_text())
    found = [block or line for block, line in rules]
    dashboard = json.loads(DASHBOARD.read_text())
    found += [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    return found


def served_names(body: str) -> set[str]:
    from prometheus_client.parser import text_string_to_metric_families

    return {s.name for family in text_string_to_metric_families(body) for s in family.samples}


def test_rules_and_dashboard_use_only_metrics_fleet_serves(app, worker, broker):
    from tests import worker_actors as wa

    waited = wa.count.send_with_options(args=("prometheus",), delay=10)  # a ready message waits a moment
    wa.count.send("prometheus")
    wait_for(lambda: int(broker.client.get("test:prometheus") or 0) >= 1, message="a job ran")
    assert waited is not None
    body = app.test_client().get("/metrics").get_data(as_text=True)
    served = served_names(body)
    used = {name for expr in expressions() for name in METRIC.findall(expr)}
    assert len(expressions()) >= 15 and len(used) >= 8
    missing = sorted(used - served)
    assert not missing, f"used by docs/ but not served by /metrics: {missing}"
    assert "fleet_queue_wait_seconds_bucket" in served and "fleet_queue_oldest_ready_seconds" in served


def test_the_oldest_ready_message_age_is_served_per_queue(app, broker):
    from tests import worker_actors as wa

    wa.count.send("nobody-reads-it")
    time.sleep(1.1)
    body = app.test_client().get("/metrics").get_data(as_text=True)
    age = re.search(r'fleet_queue_oldest_ready_seconds\{queue="tests"\} ([0-9.]+)', body)
    assert age and float(age.group(1)) >= 1.0


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (apt-get install prometheus)")
def test_promtool_accepts_the_rules():
    result = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 9 rules found" in result.stdout
