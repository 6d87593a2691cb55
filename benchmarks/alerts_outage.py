"""How soon an operator hears of a total OpenAI outage, and of its end, with production settings:
the default schedule (evaluation every 30 s), the default rules, the default breaker
(5 failures, 60 s open), two `fleet scheduler`s and one worker.

    python benchmarks/alerts_outage.py                    # a 90 s outage (about 4 min in all)
    python benchmarks/alerts_outage.py --outage 60

What it does: starts its own `redis-server`, a fresh SQLite database, the OpenAI simulator
answering 503 to every call, a webhook receiver on loopback, 2 schedulers and a worker; creates
workout plans whose generation calls OpenAI, and measures from the first failing call to the
webhook's `firing` notification of `breaker-open`; then the simulator answers again, and it
measures from then to the `resolved` one. Notifications a rule are counted (target: one firing,
one resolved, however many schedulers run).

Figures: seconds to `firing` (target: under 120 s), seconds to `resolved`, notifications sent.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
sys.path.insert(0, str(REPO_DIR))

from benchmarks.scheduler import start_redis  # noqa: E402
from tests.alert_channels import WebhookReceiver  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage", type=float, default=90, help="seconds the simulator answers 503")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fleet-bench-alerts-"))
    redis_proc, port = start_redis(tmp)
    webhook = WebhookReceiver()
    db_url = f"sqlite:///{tmp}/fleet.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "OPENAI_"))}
    env.update(DATABASE_URL=db_url, BROKER_URL=f"redis://127.0.0.1:{port}/0", FLEET_VAR_DIR=str(tmp / "var"),
               OPENAI_API_KEY="sk-bench-alerts-0000", FLEET_ALERT_WEBHOOK_URL=webhook.url, PYTHONUNBUFFERED="1",
               PYTHONPATH=str(REPO_DIR))
    os.environ.update(env)

    from core.simulators.openai_sim import start_openai_simulator

    sim = start_openai_simulator(api_key=env["OPENAI_API_KEY"])
    env["OPENAI_BASE_URL"] = os.environ["OPENAI_BASE_URL"] = sim.url
    from actors.workouts import dispatch
    from db.database import database, open_database
    from db.migrate import migrate
    from db.models.workouts import Plan, User, WorkoutPlan

    database.initialize(open_database(db_url))
    migrate(database.obj)
    procs = []

    def spawn(name: str, argv: list[str]) -> None:
        log = open(tmp / f"{name}-{len(procs)}.log", "w")
        procs.append(subprocess.Popen([sys.executable, *argv], env=env, cwd=REPO_DIR, stdout=log,
                                      stderr=subprocess.STDOUT))

    try:
        spawn("scheduler", ["-m", "fleet", "scheduler"])
        spawn("scheduler", ["-m", "fleet", "scheduler"])
        spawn("worker", ["-m", "dramatiq", "actors.all", "--processes", "1", "--threads", "4"])
        time.sleep(5)
        sim.control(fail={"503": 1.0})
        user = User.create(email="bench@example.test")
        started = time.monotonic()
        for _ in range(10):
            plan = Plan.create(user=user, goal="strength", days=3)
            for day in (1, 2, 3):
                WorkoutPlan.create(plan=plan, day=day, status="pending")
            dispatch(user.id, plan.id)
        firing = resolved = None
        while time.monotonic() - started < args.outage:
            if firing is None and webhook.alerts("breaker-open", "firing"):
                firing = time.monotonic() - started
            time.sleep(0.2)
        sim.control(fail={})
        ended = time.monotonic()
        while time.monotonic() - ended < 300 and not webhook.alerts("breaker-open", "resolved"):
            time.sleep(0.2)
        if webhook.alerts("breaker-open", "resolved"):
            resolved = time.monotonic() - ended
        time.sleep(35)  # one more evaluation: nothing else should come
        counts = {}
        for alert in webhook.alerts():
            counts[(alert["rule"], alert["state"])] = counts.get((alert["rule"], alert["state"]), 0) + 1
        print(f"machine: {platform.machine()} {os.cpu_count()} cpu(s), Python {platform.python_version()}")
        print(f"outage of {args.outage:.0f} s, 2 schedulers, evaluation every 30 s, breaker 5 failures / 60 s")
        print(f"seconds from the first failing call to `firing`:  {firing:.1f}" if firing else "never fired")
        print(f"seconds from the outage's end to `resolved`:      {resolved:.1f}" if resolved else "never resolved")
        print("notifications: " + ", ".join(f"{rule} {state} x{n}" for (rule, state), n in sorted(counts.items())))
        return 0 if firing and firing < 120 and counts.get(("breaker-open", "firing")) == 1 else 1
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        webhook.stop()
        sim.stop()
        redis_proc.terminate()


if __name__ == "__main__":
    sys.exit(main())
