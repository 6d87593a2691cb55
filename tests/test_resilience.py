"""What a crash or an outage does: real worker processes, killed or stopped, and shared breakers."""
import os
import signal
import subprocess
import sys
import uuid

import pybreaker
import pytest

from core.errors import JobError
from core.state import state_redis
from db.models.jobs import JobLog
from tests import worker_actors as wa
from tests.helpers import wait_for


def notes(key):
    return [v.decode() for v in state_redis().lrange(f"test:{key}", 0, -1)]


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


def test_worker_killed_with_sigkill_loses_nothing(db, broker, key, processes):
    env = {"FLEET_HEARTBEAT_TIMEOUT": "5"}
    doomed = processes.worker("-p", "1", "-t", "1", name="doomed", env=dict(os.environ, **env))
    survivor = None
    try:
        message = wa.slow.send(key, 3)
        started = wait_for(lambda: [n for n in notes(key) if n.startswith("start:")], timeout=30, message="job start")
        processes.stop(doomed, signal.SIGKILL)
        assert not [n for n in notes(key) if n.startswith("done:")]

        survivor = processes.worker("-p", "1", "-t", "1", name="survivor", env=dict(os.environ, **env))
        done = wait_for(lambda: [n for n in notes(key) if n.startswith("done:")], timeout=90, message="job redelivered and done")
        assert len(started) == 1 and done[0] != "done:" + started[0].split(":")[1]
    finally:
        if survivor:
            processes.stop(survivor)
    got = list(JobLog.select().where(JobLog.message_id == message.message_id).order_by(JobLog.id))
    assert [r.status for r in got][-1] == "success"


def test_joblog_loses_no_row_when_the_worker_gets_sigterm_under_load(db, broker, key, processes):
    for _ in range(3000):
        wa.count.send(key)
    proc = processes.worker("-p", "2", "-t", "4", name="loaded")
    counter = f"test:{key}"
    wait_for(lambda: int(state_redis().get(counter) or 0) >= 300, timeout=60, message="300 jobs done")
    assert processes.stop(proc) == 0
    ran = int(state_redis().get(counter))
    assert 300 <= ran < 3000
    logged = JobLog.select().where((JobLog.job_class == "count") & (JobLog.status == "success")).count()
    assert logged == ran


def _trip_openai_breaker():
    from core.breakers import breaker

    def down():
        raise JobError("ERR_API_UNAVAILABLE", "HTTP 503")

    for _ in range(3):
        try:
            breaker("openai").call(down)
        except (JobError, pybreaker.CircuitBreakerError):
            pass
    assert breaker("openai").current_state == "open"


def test_deferral_ends_at_max_defer_and_fails_like_a_spent_budget(db, worker, broker, key):
    """A job deferred by an open breaker for longer than max_defer fails like a spent retry budget."""
    _trip_openai_breaker()
    message = wa.calls_openai.send_with_options(args=(key,), max_defer=1)
    got = wait_for(lambda: (r := list(JobLog.select().where(JobLog.message_id == message.message_id).order_by(JobLog.id)))
                   and r[-1].status == "failed" and r, timeout=30, message="the job failed")
    assert [(r.status, r.error_code) for r in got] == [("deferred", "ERR_CIRCUIT_OPEN"), ("failed", "ERR_CIRCUIT_OPEN")]
    wait_for(lambda: notes(f"gave-up:{key}") == ["ERR_CIRCUIT_OPEN"], message="on_give_up")
    assert notes(key) == ["ran"]  # it ran once, as the half-open trial, which failed


TRIAL = """
import sys, time
from core.breakers import breaker
from core.state import state_redis
state_redis().blpop([sys.argv[1] + ":go"], 30)
def call():
    state_redis().rpush(sys.argv[1], "subprocess")
    time.sleep(2)
try:
    breaker("openai").call(call)
    print("called")
except Exception as exc:
    print(type(exc).__name__)
"""


def test_half_open_lets_exactly_one_trial_call_through_across_the_fleet(broker, key):
    """A half-open breaker lets exactly one trial call through, however many threads and processes ask."""
    import threading
    import time

    from core.breakers import breaker, seconds_to_wait

    _trip_openai_breaker()
    other = subprocess.Popen([sys.executable, "-c", TRIAL, f"test:{key}"], env=os.environ,
                             stdout=subprocess.PIPE, text=True)
    wait_for(lambda: seconds_to_wait("openai") == 0, timeout=10, message="the breaker due to half-open")
    results, start = [], threading.Barrier(6)

    def call():
        state_redis().rpush(f"test:{key}", "thread")
        time.sleep(2)

    def attempt():
        start.wait()
        try:
            breaker("openai").call(call)
            results.append("called")
        except pybreaker.CircuitBreakerError:
            results.append("refused")

    threads = [threading.Thread(target=attempt) for _ in range(5)]
    for t in threads:
        t.start()
    state_redis().rpush(f"test:{key}:go", 1)
    start.wait()
    for t in threads:
        t.join(10)
    results.append(other.communicate(timeout=30)[0].strip().replace("CircuitBreakerError", "refused"))
    assert len(notes(key)) == 1  # one trial call across both processes
    assert sorted(results) == ["called"] + ["refused"] * 5
    assert breaker("openai").current_state == "closed"  # the trial succeeded
