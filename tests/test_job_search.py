"""The job log's search: by a job's arguments (named from the actor's signature, written by the
worker's JobLog middleware), by message id and by trace id; in the panel and in the CLI."""
from __future__ import annotations

import re
import sqlite3

from actors.jobs import cleanup
from db.models.jobs import JobArgument, JobLog
from tests import worker_actors
from tests.helpers import fleet, migrated, wait_for


def _found(client, search: str) -> set[str]:
    page = client.get("/admin/jobs/", query_string={"search": search})
    assert page.status_code == 200, page.text[:300]
    return set(re.findall(r'title="([^" ]+) \(every attempt of this message\)"', page.text))


def test_search_finds_exactly_the_jobs_of_an_argument_a_message_id_or_a_trace_id(worker, admin_client):
    alpha = worker_actors.slow.send("alpha", 0).message_id
    beta = worker_actors.count.send("beta").message_id
    flaky = worker_actors.flaky.send("alpha", 0).message_id  # positional: named `key` and `failures`
    wait_for(lambda: JobLog.select().where(JobLog.status == "success").count() == 3, message="three jobs logged")

    assert _found(admin_client, "key=alpha") == {alpha, flaky}
    assert _found(admin_client, "key = beta") == {beta}
    assert _found(admin_client, "key=alpha failures=0") == {flaky}
    assert _found(admin_client, "key=gamma") == set()
    assert _found(admin_client, alpha) == {alpha}
    trace = JobLog.get(JobLog.message_id == beta).trace_id
    assert trace and _found(admin_client, trace) == {beta}
    assert _found(admin_client, "planned") == set()  # words still search the message text

    cleanup(days=0, keep=0)
    assert JobArgument.select().count() == 0  # the arguments go with their rows


def test_fleet_jobs_list_search_and_the_controls_at_the_command_line(fleet_env, tmp_path, broker):
    """(`broker`: the session Redis the commands write to is emptied afterwards.)"""
    migrated(fleet_env["DATABASE_URL"])
    with sqlite3.connect(tmp_path / "fleet.db") as conn:
        for n, plan in ((1, 13), (2, 14)):
            conn.execute("INSERT INTO job_log (run_id, job_class, message_id, queue, status, attempt, created_at) "
                         "VALUES (?, 'generate_user_workout_plan', ?, 'workouts', 'success', 1, '2026-01-01 10:00:00')",
                         (f"run-{n}", f"msg-{n}"))
            conn.execute("INSERT INTO job_arguments (message_id, name, value, created_at) "
                         "VALUES (?, 'plan_id', ?, '2026-01-01 10:00:00')", (f"msg-{n}", str(plan)))
    listed = fleet("jobs", "list", "--search", "plan_id=13", env=fleet_env)
    assert listed.returncode == 0 and "msg-1" in listed.stdout and "msg-2" not in listed.stdout, listed.stdout

    paused = fleet("queues", "pause", "workouts", env=fleet_env)
    assert paused.returncode == 0 and "Paused queue workouts" in paused.stdout, paused.stderr
    unknown = fleet("queues", "pause", "nosuch", env=fleet_env)
    assert unknown.returncode == 2 and "no queue 'nosuch'" in unknown.stderr
    tripped = fleet("breakers", "trip", "series_api", env=fleet_env)
    assert tripped.returncode == 0 and "Breaker series_api: closed -> open." in tripped.stdout, tripped.stderr
    missing = fleet("jobs", "cancel", "msg-404", env=fleet_env)
    assert missing.returncode == 1 and "no queued or delayed job with message id msg-404" in missing.stderr
    with sqlite3.connect(tmp_path / "fleet.db") as conn:
        audit = conn.execute("SELECT action, target, role, source FROM audit_log WHERE action NOT LIKE 'db.%' "
                             "ORDER BY id").fetchall()
        assert conn.execute("SELECT queue FROM paused_queues").fetchall() == [("workouts",)]
    assert audit == [("queues.pause", "workouts", "cli", "cli"), ("breakers.trip", "series_api", "cli", "cli")]


def test_the_search_on_postgresql_through_the_joblog_writer(own_postgres_url, broker):
    from dramatiq import Message
    from dramatiq.broker import MessageProxy

    from actors.controls import search_condition
    from actors.middleware.joblog import JobLogWriter
    from db.database import database, open_database

    pg = open_database(own_postgres_url)
    previous = database.obj
    database.initialize(pg)
    try:
        writer = JobLogWriter()
        sent = {plan: MessageProxy(Message(queue_name="workouts", actor_name="generate_user_workout_plan",
                                           args=(7, plan), kwargs={}, options={"trace_id": f"trace-{plan}"}))
                for plan in (13, 130)}
        for message in sent.values():
            writer.before_process_message(broker, message)
            writer.after_process_message(broker, message)
        writer.flush()
        with database.connection_context():
            def found(text):
                return {r.message_id for r in JobLog.select(JobLog.message_id).where(search_condition(text))}

            assert found("plan_id=13") == {sent[13].message_id}
            assert found("user_id=7") == {sent[13].message_id, sent[130].message_id}
            assert found("trace-130") == {sent[130].message_id}
            assert found(sent[13].message_id) == {sent[13].message_id}
    finally:
        database.initialize(previous)
        pg.close_all()
