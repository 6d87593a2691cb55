"""AI work at the provider's limit: Fleet with its OpenAI budget beside Fleet without it.

    python benchmarks/ai_limits.py [--plans N] [--days 4] [--window 60] [--cases rpm60,rpm600,tpm]

Against the OpenAI simulator enforcing limits per key as OpenAI does (429 with the real wait,
x-ratelimit-* headers), a backlog of plans × days pending days (240 at 60 requests a minute,
2,400 at 600, 240 large prompts at 60,000 tokens a minute) is dispatched at once
(`fleet workouts generate --all-pending`) to `fleet worker -p 2 -t 8`, once with the budget
(the default) and once with FLEET_OPENAI_BUDGET=0 (calls unspaced, a 429 spends a retry), both
with FLEET_RETRY_DELAYS=5,15,30 so a run without the budget settles in minutes. Cases: 60 and
600 requests a minute, and a token-bound one (large prompts against a TPM limit). Prints days
generated and failed, the share of 429s among requests, and goodput: days a second over what
the limit allows. Targets with the budget: 0 failed, 429s <= 1 %, goodput >= 0.9.
`--window` shortens the simulator's and Fleet's "minute" for a quick look (figures for the docs
use 60).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis  # noqa: E402

from actors.middleware.presence import live_workers  # noqa: E402
from core.embedded_redis import redis_server_binary  # noqa: E402
from core.net import free_port  # noqa: E402
from core.simulators.openai_sim import start_openai_simulator  # noqa: E402
from db.database import open_database  # noqa: E402
from db.migrate import migrate  # noqa: E402
from db.models import utcnow  # noqa: E402
from db.models.ai import AISpend  # noqa: E402
from db.models.workouts import Plan, User, WorkoutPlan  # noqa: E402

KEY = "sk-fleet-bench-limits"
LARGE_GOAL = "strength and endurance " * 180  # ~1,000 prompt tokens: the token-bound case
CASES = {  # name: (rpm, tpm, goal, plans): each backlog needs four minutes or more at its limit, so
    # the provider's full bucket at the start (a minute's worth) does not decide the outcome
    "rpm60": (60, 0, "strength", 60),
    "rpm600": (600, 0, "strength", 600),
    "tpm": (10_000, 60_000, LARGE_GOAL, 60),
}


def seed(db, plans: int, days: int, goal: str) -> None:
    now = utcnow()
    with User.bind_ctx(db), Plan.bind_ctx(db), WorkoutPlan.bind_ctx(db), db.atomic():
        user = User.create(email="bench@x.io", created_at=now)
        for _ in range(plans):
            plan = Plan.create(user=user, goal=goal, days=days, created_at=now)
            WorkoutPlan.insert_many([{"plan": plan, "day": d, "status": "pending", "created_at": now,
                                      "updated_at": now} for d in range(1, days + 1)]).execute()


def counts(db) -> dict[str, int]:
    with WorkoutPlan.bind_ctx(db):
        rows = WorkoutPlan.select(WorkoutPlan.status).tuples()
        found = {"pending": 0, "generated": 0, "failed": 0}
        for (status,) in rows:
            found[status] += 1
        return found


def run(case: str, budget: bool, args, work: Path) -> dict:
    rpm, tpm, goal, plans = CASES[case]
    plans = args.plans or plans
    label = f"{case}-{'budget' if budget else 'off'}"
    port = free_port()
    server = subprocess.Popen([redis_server_binary(), "--port", str(port), "--save", "", "--appendonly", "no",
                               "--dir", str(work)], stdout=subprocess.DEVNULL)
    redis_url = f"redis://127.0.0.1:{port}/0"
    sim = start_openai_simulator(api_key=KEY, rpm=rpm, tpm=tpm, window=args.window)
    db_url = f"sqlite:///{work}/{label}.db"
    db = open_database(db_url)
    db.connect()
    migrate(db)
    seed(db, plans, args.days, goal)
    env = dict(os.environ, DATABASE_URL=db_url, BROKER_URL=redis_url, FLEET_VAR_DIR=str(work / label),
               OPENAI_API_KEY=KEY, OPENAI_BASE_URL=sim.url, FLEET_OPENAI_WINDOW=str(args.window),
               FLEET_OPENAI_BUDGET="1" if budget else "0", FLEET_RETRY_DELAYS="5,15,30", PYTHONUNBUFFERED="1")
    log = open(work / f"{label}.log", "w")
    worker = subprocess.Popen([sys.executable, "-m", "fleet", "worker", "-p", "2", "-t", "8"], env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    client = redis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + 60
        while len(live_workers(client, 10)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        total = plans * args.days
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "fleet", "workouts", "generate", "--all-pending"], env=env,
                       check=True, capture_output=True)
        timeout = max(300, 3 * total * args.window / rpm)
        finished_at = None
        while time.monotonic() - started < timeout:
            found = counts(db)
            if found["pending"] == 0:
                finished_at = time.monotonic()
                break
            time.sleep(0.5)
        elapsed = (finished_at or time.monotonic()) - started
        found = counts(db)
        stats = sim.stats()
        with AISpend.bind_ctx(db):
            spent = list(AISpend.select())
        calls = sum(r.requests for r in spent) or 1
        tokens_per_call = sum(r.prompt_tokens + r.completion_tokens for r in spent) / calls
        allowed = rpm / args.window  # days a second the limits allow: one call a day
        if tpm:
            allowed = min(allowed, tpm / args.window / tokens_per_call)
        return {"case": label, "days": total, **found, "requests": stats["requests"],
                "rate_limited": stats["by_outcome"].get("429", 0), "seconds": elapsed,
                "settled": finished_at is not None, "goodput": found["generated"] / elapsed / allowed,
                "busiest": sim._get()["limits"]["busiest_window"], "limit": rpm}
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
        sim.stop()
        db.close()
        server.terminate()
        server.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", type=int, default=0, help="Plans a case (default: its own, 60 or 600).")
    parser.add_argument("--days", type=int, default=4)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-ai-"))
    results = []
    for case in args.cases.split(","):
        for budget in (True, False):
            result = run(case, budget, args, work)
            results.append(result)
            print(f"{result['case']}: {result}", flush=True)

    print(f"\n{args.days} days a plan, fleet worker -p 2 -t 8, a 'minute' of {args.window:g} s; "
          "busiest: requests the simulator saw in its busiest window")
    print(f"{'case':<16} {'generated':>9} {'failed':>6} {'pending':>7} {'requests':>8} {'429s':>6} "
          f"{'seconds':>8} {'goodput':>7} {'busiest':>7}  targets (budget): 0 failed, 429s <= 1 %, goodput >= 0.9")
    ok = True
    for r in results:
        share = r["rate_limited"] / max(1, r["requests"])
        met = r["failed"] == 0 and share <= 0.01 and r["goodput"] >= 0.9 and r["settled"]
        if r["case"].endswith("budget"):
            ok &= met
        print(f"{r['case']:<16} {r['generated']:>9} {r['failed']:>6} {r['pending']:>7} {r['requests']:>8} "
              f"{share:>6.1%} {r['seconds']:>8.1f} {r['goodput']:>7.2f} {r['busiest']:>7}  "
              f"{('met' if met else 'missed') if r['case'].endswith('budget') else '-'}")
    print(f"logs: {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
