"""/metrics across hosts: a second "host" (its own UTS namespace, so its own host name, and its
own var/ directory) runs a real worker and a real `fleet web`. Scraped there, its counters
carry its `host`; scraped here, they are absent (they live on that machine), while the fleet's
gauges read from Redis (workers per host) are the same from either."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
import requests

from core.net import free_port
from tests import worker_actors as wa
from tests.helpers import REPO, wait_for

OTHER = "fleet-test-other-host"


def _samples(body: str, name: str) -> list[tuple[dict, float]]:
    from prometheus_client.parser import text_string_to_metric_families

    return [(s.labels, s.value) for family in text_string_to_metric_families(body) for s in family.samples
            if s.name == name]


def test_each_host_serves_its_own_counters_labelled_and_every_host_the_fleets_workers(app, broker, processes,
                                                                                     tmp_path):
    if shutil.which("unshare") is None or subprocess.run(["unshare", "--uts", "true"]).returncode != 0:
        pytest.skip("cannot make a UTS namespace here (unshare --uts needs root)")
    port = free_port()
    var = tmp_path / "other-var"
    env = {**os.environ, "FLEET_VAR_DIR": str(var), "PROMETHEUS_MULTIPROC_DIR": str(var / "metrics")}
    python = sys.executable
    for name, command in (("worker", "-m dramatiq tests.worker_actors --processes 1 --threads 2 --queues tests"),
                          ("web", f"-m fleet web --host 127.0.0.1 --port {port}")):
        log = open(tmp_path / f"other-host-{name}.log", "w")
        # stopped by `processes` (SIGTERM): the worker leaves, its presence record with it
        processes.started.append(subprocess.Popen(
            ["unshare", "--uts", "sh", "-c", f"hostname {OTHER} && exec {python} {command}"], env=env, cwd=REPO,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    wait_for(lambda: re.search(rf'fleet_workers\{{host="{OTHER}"\}} 1', app.test_client().get("/metrics").text),
             timeout=30, message="the other host's worker, counted here")

    wa.count.send("hosts-metrics")
    wait_for(lambda: int(broker.client.get("test:hosts-metrics") or 0) >= 1, message="its worker ran the job")

    def counted_there():
        body = _ok(f"http://127.0.0.1:{port}/metrics")
        ran = [(labels, v) for labels, v in _samples(body or "", "fleet_jobs_total")
               if labels.get("actor") == "count" and labels.get("status") == "success"]
        return ran and (body, ran)

    there, ran = wait_for(counted_there, timeout=30, message="its fleet web counts the job")
    assert {labels["host"] for labels, _ in ran} == {OTHER} and sum(v for _, v in ran) >= 1
    assert ({labels["host"]: v for labels, v in _samples(there, "fleet_worker_threads")}[OTHER] == 2)

    here = app.test_client().get("/metrics").text
    assert not [labels for labels, _ in _samples(here, "fleet_jobs_total") if labels.get("host") == OTHER]
    assert {labels["host"]: v for labels, v in _samples(here, "fleet_workers")}[OTHER] == 1, "the fleet's, from Redis"


def _ok(url: str) -> str | None:
    try:
        response = requests.get(url, timeout=2)
    except requests.RequestException:
        return None
    return response.text if response.status_code == 200 else None
