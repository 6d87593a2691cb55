"""What a crash or an outage does: real worker processes, killed or stopped, and shared breakers."""
import os
import signal
import subprocess
import sys
import uuid

import pytest

from core.state import state_redis
from db.models.jobs import JobLog
from tests import worker_actors as wa
from tests.helpers import wait_for


def notes(key):
    return [v.decode() for v in state_redis().lrange(f"test:{key}", 0, -1)]


def start_worker(tmp_path, name, *args, **env):
    log = open(tmp_path / f"{name}.log", "w")
    return subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "tests.worker_actors", *args],
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(proc, sig=signal.SIGTERM, timeout=30):
    """SIGTERM to Dramatiq's main process (as supervisord does), SIGKILL to the whole group."""
    if proc.poll() is None:
        if sig == signal.SIGKILL:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
    return proc.wait(timeout)


@pytest.fixture
def key():
    return uuid.uuid4().hex[:12]


def test_breaker_opened_in_one_process_defers_jobs_in_another(db, worker, broker, key):
    trip = (
        "from core.breakers import breaker\n"
        "from core.errors import JobError\n"
        "import pybreaker\n"
        "def down(): raise JobError('ERR_API_UNAVAILABLE', 'HTTP 503')\n"
        "for _ in range(3):\n"
        "    try: breaker('openai').call(down)\n"
        "    except (JobError, pybreaker.CircuitBreakerError): pass\n"
        "print(breaker('openai').current_state)\n"
    )
    tripped = subprocess.run([sys.executable, "-c", trip], capture_output=True, text=True, env=os.environ, timeout=60)
    assert tripped.stdout.strip() == "open", tripped.stderr

    message = wa.needs_openai.send(key)
    wait_for(lambda: notes(key) == ["ran"], timeout=30, message="job to run once the breaker half-opens")
    got = wait_for(lambda: (r := list(JobLog.select().where(JobLog.message_id == message.message_id).order_by(JobLog.id)))
                   and r[-1].status == "success" and r, timeout=10, message="JobLog rows")
    deferred = [r for r in got if r.status == "deferred"]
    assert deferred and all(r.error_code == "ERR_CIRCUIT_OPEN" for r in deferred), [(r.status, r.error_code) for r in got]
    assert all(r.attempt == 1 for r in got)  # deferral spends no retry budget
    assert got[-1].status == "success"


def test_worker_killed_with_sigkill_loses_nothing(db, broker, key, tmp_path):
    env = {"FLEET_HEARTBEAT_TIMEOUT": "5"}
    doomed = start_worker(tmp_path, "doomed", "-p", "1", "-t", "1", **env)
    survivor = None
    try:
        message = wa.slow.send(key, 3)
        started = wait_for(lambda: [n for n in notes(key) if n.startswith("start:")], timeout=30, message="job start")
        stop(doomed, signal.SIGKILL)
        assert not [n for n in notes(key) if n.startswith("done:")]

        survivor = start_worker(tmp_path, "survivor", "-p", "1", "-t", "1", **env)
        done = wait_for(lambda: [n for n in notes(key) if n.startswith("done:")], timeout=90, message="job redelivered and done")
        assert len(started) == 1 and done[0] != "done:" + started[0].split(":")[1]
    finally:
        if survivor:
            stop(survivor)
    got = list(JobLog.select().where(JobLog.message_id == message.message_id).order_by(JobLog.id))
    assert [r.status for r in got][-1] == "success"


def test_joblog_loses_no_row_when_the_worker_gets_sigterm_under_load(db, broker, key, tmp_path):
    for _ in range(3000):
        wa.count.send(key)
    proc = start_worker(tmp_path, "loaded", "-p", "2", "-t", "4")
    counter = f"test:{key}"
    wait_for(lambda: int(state_redis().get(counter) or 0) >= 300, timeout=60, message="300 jobs done")
    assert stop(proc) == 0
    ran = int(state_redis().get(counter))
    assert 300 <= ran < 3000
    logged = JobLog.select().where((JobLog.job_class == "count") & (JobLog.status == "success")).count()
    assert logged == ran
