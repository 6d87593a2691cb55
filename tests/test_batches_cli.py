"""`fleet batches …` and the batch part of `fleet jobs cleanup`, as real subprocesses on the
session's database and Redis (an in-process worker works the batches)."""
from __future__ import annotations

import json
import os
import subprocess
from datetime import timedelta

from actors import batches as ops
from db.models import utcnow
from db.models.batches import Batch
from tests import batch_kinds as bk
from tests.helpers import InProcessWorker, fleet
from tests.test_batches import finished


def run(*args: str):
    return fleet(*args, env=dict(os.environ))


def test_unknown_batch_ids_are_one_line_and_exit_1(db, broker):
    for command in (["show", "nope"], ["monitor", "nope", "--watch"], ["cancel", "abcd"], ["retry", "nope"]):
        result = run("batches", *command)
        assert (result.returncode, result.stderr, result.stdout) == (1, f"fleet: no batch with id {command[1]}\n", "")


def test_list_show_and_monitor_a_finished_batch(db, broker, worker):
    assert run("batches", "list").stdout == "No batches.\n"
    batch = ops.create_batch(bk.KIND, "cli batch", ["ok:a", "fail:ERR_BAD_REQUEST:b", "ok:c"], created_by="ops")
    finished(batch.id)

    listed = run("batches", "list", "--status", "completed")
    assert listed.returncode == 0 and batch.id[:8] in listed.stdout and "completed with 1" in listed.stdout
    assert run("batches", "list", "--status", "bogus").returncode == 2

    shown = run("batches", "show", batch.id[:8])
    assert shown.returncode == 0, shown.stderr
    for line in (f"Batch {batch.id} (test_steps): cli batch", "Status: completed with 1 failure",
                 "Succeeded: 2  Failed: 1  Cancelled: 0  Total: 3", "Cost: $0.004500  Tokens: 36",
                 "Error ERR_BAD_REQUEST × 1: The external API rejected the request as invalid (HTTP 400/422)."):
        assert line in shown.stdout
    assert "planned failure of fail:ERR_BAD_REQUEST:b" in shown.stdout

    data = json.loads(run("batches", "show", batch.id, "--json").stdout)
    assert (data["status_label"], data["processed"], data["total"], data["percent"]) == ("completed with 1 failure", 3, 3, 100.0)
    assert [i["status"] for i in data["items"]] == ["succeeded", "failed", "succeeded"]
    failed = json.loads(run("batches", "show", batch.id, "--json", "--failed").stdout)["items"]
    assert [i["key"] for i in failed] == ["fail:ERR_BAD_REQUEST:b"]

    monitored = run("batches", "monitor", batch.id)
    assert monitored.returncode == 0 and "completed with 1 failure  100%  3/3" in monitored.stdout
    watched = run("batches", "monitor", batch.id, "--watch")
    assert watched.returncode == 0
    assert watched.stdout.splitlines()[-1] == (f"Batch {batch.id} completed with 1 failure: 2 succeeded, 1 failed, "
                                               "0 cancelled of 3; $0.004500, 36 tokens.")


def test_monitor_watch_follows_a_running_batch_and_exits_1_when_it_is_cancelled(db, broker, processes):
    # No worker until the monitor watches and the cancel is done: the batches cannot end first.
    batch = ops.create_batch(bk.KIND, "watched", [f"sleep:0.05:{i}" for i in range(40)], chunk_size=5)
    stopped = ops.create_batch(bk.KIND, "stopped", [f"sleep:0.05:{i}" for i in range(40)], chunk_size=5)
    cancelled = run("batches", "cancel", stopped.id)
    assert cancelled.returncode == 0 and cancelled.stdout.startswith("Cancelled ")
    monitor = processes.start("batches", "monitor", batch.id, "--watch", stdout=subprocess.PIPE, text=True)
    first = monitor.stdout.readline()
    worker = InProcessWorker(broker, worker_threads=4)
    worker.start()
    try:
        lines = [first.rstrip("\n"), *monitor.stdout.read().splitlines()]
        assert monitor.wait(30) == 0
        assert len(lines) >= 3 and "items/s" in lines[0] and "  0%  0/40" in lines[0]
        assert lines[-2].startswith("completed  100%  40/40") and "completed: 40 succeeded" in lines[-1]

        assert run("batches", "monitor", stopped.id, "--watch").returncode == 1
        assert finished(stopped.id).status == "cancelled"
        assert run("batches", "monitor", stopped.id).returncode == 1
    finally:
        worker.stop()


def test_retry_and_resume_from_the_command_line(db, broker, worker, openai_sim, tmp_path):
    """A real kind (this command knows every kind of Fleet, not the tests' own)."""
    present, late = tmp_path / "da.txt", tmp_path / "spaet.txt"
    present.write_text("Da.\n")
    batch = ops.create_batch("translation", "again", [str(present), str(late)],
                             options={"from": "de", "to": "nl", "out": None})
    assert finished(batch.id).failed == 1  # spaet.txt is not there yet: ERR_INPUT_FILE
    late.write_text("Jetzt da.\n")
    retried = run("batches", "retry", batch.id)
    assert retried.stdout == f"Retrying 1 failed item(s) of batch {batch.id}.\n", retried.stderr
    done = finished(batch.id)
    assert (done.status, done.succeeded, done.failed) == ("completed", 2, 0)
    assert (tmp_path / "spaet.nl.txt").read_text() == "[nl] Jetzt da.\n"
    assert openai_sim.stats()["requests"] == 2  # da.txt was not translated again
    assert run("batches", "retry", batch.id).stdout == f"Batch {batch.id} has no failed item; nothing retried.\n"
    assert run("batches", "resume", batch.id).stdout == f"Batch {batch.id} is completed; nothing to resume.\n"


def test_jobs_cleanup_prunes_finished_batches_older_than_30_days(db, broker):
    old = ops.create_batch(bk.KIND, "old", ["ok:a"])
    Batch.update(status="completed", created_at=utcnow() - timedelta(days=31),
                 finished_at=utcnow() - timedelta(days=31)).where(Batch.id == old.id).execute()
    result = run("jobs", "cleanup")
    assert result.returncode == 0, result.stderr
    assert "Deleted 0 finished batch(es) older than 30 days with their items; kept the newest 100." in result.stdout
    assert Batch.get_or_none(Batch.id == old.id) is not None  # one of the newest 100
    for n in range(100):
        Batch.insert(id=f"00000000-0000-0000-0000-{n:012d}", kind=bk.KIND, title="filler", status="completed",
                     total=0, chunk_size=1, created_at=utcnow(), finished_at=utcnow()).execute()
    assert "Deleted 1 finished batch(es)" in run("jobs", "cleanup").stdout
    assert Batch.get_or_none(Batch.id == old.id) is None


def test_monitor_watch_draws_a_progress_bar_on_a_terminal(db, broker, worker, processes):
    import pty

    batch = ops.create_batch(bk.KIND, "on a terminal", [f"sleep:0.05:{i}" for i in range(30)], chunk_size=5)
    terminal, child_end = pty.openpty()
    proc = processes.start("batches", "monitor", batch.id, "--watch", stdin=subprocess.DEVNULL, stdout=child_end,
                           stderr=subprocess.PIPE)
    os.close(child_end)
    screen = b""
    while True:
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        screen += chunk
    os.close(terminal)
    assert proc.wait(60) == 0, proc.stderr.read().decode()
    text = screen.decode(errors="replace")
    assert "━" in text and "100%" in text and "30/30" in text  # rich's bar, percentage, processed/total
    assert "items/s" in text and f"Batch {batch.id} completed: 30 succeeded" in text
