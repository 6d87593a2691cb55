"""Translation batches worked by real `fleet worker` processes: killed with SIGKILL mid-batch,
racing each other for the last items, sharing three batches started at once, and without
OpenAI. The OpenAI simulator of the test session answers over HTTP and counts each segment."""
from __future__ import annotations

import os
import signal
import threading
from collections import Counter

import psutil
import requests

from actors import batches
from actors import translations as tr
from core.net import free_port
from core.simulators.openai_sim import segment_digest
from db.models.batches import Batch, BatchChunk, BatchItem
from db.models.jobs import JobLog
from tests.helpers import fleet, wait_for
from tests.test_batches import assert_counters_match_items, finish_rows, finished


def files(tmp_path, count: int, stem: str = "datei") -> list:
    made = []
    for n in range(count):
        path = tmp_path / f"{stem}{n:02d}.txt"
        path.write_text(f"Absatz {n} der Datei {stem}.\n")
        made.append(path)
    return made


def translation(paths, chunk_size: int) -> Batch:
    """A translation batch with small chunks (the command always uses FLEET_BATCH_CHUNK)."""
    return batches.create_batch(tr.KIND, f"{len(paths)} files", [str(p) for p in paths], chunk_size=chunk_size,
                                options={"from": "de", "to": "nl", "out": None})


def by_segment(simulator) -> Counter:
    return Counter(requests.get(f"{simulator.base_url}/_control", timeout=5).json()["translations"]["by_segment"])


def digest(path) -> str:
    return segment_digest(path.read_text().strip())


def chunk_workers(batch_ids) -> set[str]:
    return {r.worker for r in JobLog.select(JobLog.worker).where(
        (JobLog.job_class == f"batch_chunk_{tr.KIND}") & (JobLog.status == "success"))}


def test_a_worker_killed_mid_batch_loses_nothing_and_translates_nothing_twice(db, broker, openai_sim, tmp_path, processes):
    openai_sim.control(latency_ms=250)
    paths = files(tmp_path, 12)
    heartbeat = {"FLEET_HEARTBEAT_TIMEOUT": "3"}
    doomed = processes.start("worker", "-p", "1", "-t", "2", name="doomed", env=dict(os.environ, **heartbeat))
    survivor = None
    try:
        batch = translation(paths, chunk_size=4)
        wait_for(lambda: sum(c.succeeded for c in BatchChunk.select().where(BatchChunk.batch == batch.id)) >= 3,
                 timeout=60, message="three files translated")
        processes.stop(doomed, signal.SIGKILL)
        at_kill = {i.position: i.status for i in batches.items(batch.id, limit=None)}
        done_before = [p for p, s in at_kill.items() if s == "succeeded"]
        running = [p for p, s in at_kill.items() if s == "running"]
        assert len(done_before) >= 3 and len(done_before) < 12

        survivor = processes.start("worker", "-p", "1", "-t", "2", name="survivor", env=dict(os.environ, **heartbeat))
        resumed = fleet("batches", "resume", batch.id, env=dict(os.environ))
        assert resumed.returncode == 0, resumed.stderr
        assert "chunk(s) still queued or running" in resumed.stdout  # Dramatiq redelivers the dead worker's chunks
        done = finished(batch.id, timeout=90)
    finally:
        for proc in (doomed, survivor):
            if proc is not None:
                processes.stop(proc)
    assert (done.status, done.succeeded, done.failed) == ("completed", 12, 0)
    assert all((tmp_path / f"datei{n:02d}.nl.txt").read_text().startswith("[nl] Absatz") for n in range(12))
    counts = by_segment(openai_sim)
    for position in done_before:  # done before the kill: never translated again
        assert counts[digest(paths[position])] == 1
    for position in set(range(12)) - set(running):
        assert counts[digest(paths[position])] == 1
    assert all(counts[digest(paths[p])] <= 2 for p in running)  # in flight at the kill: at most once more
    assert sum(counts.values()) <= 12 + len(running)
    assert len(finish_rows(batch.id)) == 1
    assert_counters_match_items(done)


def test_two_worker_processes_racing_for_the_last_items_finish_each_batch_once(db, broker, openai_sim, tmp_path, processes):
    openai_sim.control(latency_ms=100)
    workers = [processes.start("worker", "-p", "1", "-t", "2", name=f"racer{n}") for n in range(2)]
    try:
        made = [translation(files(tmp_path, 6, stem=f"b{n}-"), chunk_size=1) for n in range(3)]
        done = [finished(b.id, timeout=90) for b in made]
    finally:
        for proc in workers:
            processes.stop(proc)
    for batch in done:
        assert (batch.status, batch.succeeded) == ("completed", 6)
        assert len(finish_rows(batch.id)) == 1
        assert_counters_match_items(batch)
    assert len(chunk_workers([b.id for b in made])) == 2  # both processes took chunks
    assert set(by_segment(openai_sim).values()) == {1} and sum(by_segment(openai_sim).values()) == 18


def test_three_translations_started_at_once_are_worked_by_the_running_worker_alone(db, broker, openai_sim, tmp_path, processes):
    """Seed 002: starting work never starts workers; the ones running share it."""
    worker = processes.start("worker", "-p", "1", "-t", "4", name="only")
    try:
        wait_for(lambda: len(psutil.Process(worker.pid).children()) == 1, timeout=30, message="the worker process")
        tree = {p.pid for p in psutil.Process(worker.pid).children(recursive=True)} | {worker.pid}
        groups = [files(tmp_path, 3, stem=f"g{n}-") for n in range(3)]
        results = [None] * 3

        def translate(n):
            results[n] = fleet("translate", "--from", "de", "--to", "nl", *map(str, groups[n]), env=dict(os.environ))

        starters = [threading.Thread(target=translate, args=(n,)) for n in range(3)]
        for t in starters:
            t.start()
        for t in starters:
            t.join(60)
        assert [r.returncode for r in results] == [0, 0, 0], [r.stderr for r in results]
        made = list(Batch.select())
        assert len(made) == 3
        done = [finished(b.id, timeout=60) for b in made]
        assert {p.pid for p in psutil.Process(worker.pid).children(recursive=True)} | {worker.pid} == tree
    finally:
        processes.stop(worker)
    assert all((b.status, b.succeeded) == ("completed", 3) for b in done)
    child = next(iter(tree - {worker.pid}))
    assert {w.rsplit(":", 1)[1] for w in chunk_workers([b.id for b in made])} == {str(child)}
    ours = [p for p in psutil.process_iter(["cmdline"]) if "dramatiq" in " ".join(p.info["cmdline"] or [])
            and _broker_of(p) == os.environ["BROKER_URL"]]
    assert ours == []  # and nothing of ours is left running


def _broker_of(process) -> str | None:
    try:
        return process.environ().get("BROKER_URL")
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        return None


def test_openai_unreachable_fails_the_items_with_their_code_after_the_retries(db, broker, tmp_path, processes):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    worker = processes.start("worker", "-p", "1", "-t", "1", name="offline",
                             env=dict(os.environ, OPENAI_BASE_URL=dead, FLEET_RETRY_DELAYS="1"))
    try:
        batch = translation(files(tmp_path, 3), chunk_size=50)
        done = finished(batch.id, timeout=60)
    finally:
        processes.stop(worker)
    assert (done.status, done.failed, done.succeeded) == ("completed", 3, 0)
    items = batches.items(batch.id)
    assert {i.error_code for i in items} == {"ERR_CONNECTION"}
    assert items[0].attempts == 2 and "OpenAI unreachable" in items[0].error_message  # tried, retried once
    assert [i.attempts for i in items[1:]] == [0, 0] and items[1].error_message.startswith("not attempted")
    assert BatchItem.select().where(BatchItem.status == "failed").count() == 3
    assert len(finish_rows(batch.id)) == 1
