"""`python -m tests.hosts_load N`: N one-day workout plans of a new user, their generation jobs
sent in one `send_many`; prints the plan ids' range. Run with the hosts' settings in the
environment (tests/test_hosts.py, benchmarks/hosts.py)."""
from __future__ import annotations

import sys
import uuid


def main(count: int) -> None:
    from actors.runtime import boot
    from actors.workouts import generate_user_workout_plan
    from db.database import database
    from db.models import utcnow
    from db.models.workouts import Plan, User, WorkoutPlan

    boot()
    database.connect(reuse_if_open=True)
    with database.atomic():
        user = User.create(email=f"hosts-{uuid.uuid4().hex[:8]}@example.com")
        now = utcnow()
        first = None
        for _ in range(count):
            plan = Plan.create(user=user, goal="scale out", days=1)
            first = first or plan.id
        plans = list(range(first, plan.id + 1))
        WorkoutPlan.insert_many([{"plan": p, "day": 1, "status": "pending", "created_at": now, "updated_at": now}
                                 for p in plans]).execute()
    sent, _ = generate_user_workout_plan.send_many((user.id, p) for p in plans)
    print(f"{first} {plan.id} {sent}")


if __name__ == "__main__":
    main(int(sys.argv[1]))
