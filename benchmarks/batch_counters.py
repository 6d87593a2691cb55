"""Where a batch keeps its counters: one hot row, or a row per chunk job.

    python benchmarks/batch_counters.py                              # SQLite, and PostgreSQL if
    FLEET_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:5432/postgres python benchmarks/batch_counters.py

P processes × T threads each settle items of their own chunk, one transaction an item (what
a chunk job does when items are slow, as AI calls are): the item's UPDATE, then the counter
UPDATE `processed = processed + 1, succeeded = succeeded + 1, cost = cost + x` either

    batch row    on the batch's one row, which every worker updates, or
    chunk row    on the row of the worker's own chunk (what Fleet does; the batch's progress
                 is the sum of its chunk rows),

and reports settled items a second. On PostgreSQL the batch row's lock is held from a
transaction's UPDATE until its commit, so the workers queue on it; on SQLite every write
transaction already takes the one database lock, so the two differ little there.
"""
from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_DIR))

from tests.servers import scratch_postgres  # noqa: E402

SCHEMA = [
    'CREATE TABLE batch (id VARCHAR(36) PRIMARY KEY, processed INTEGER NOT NULL, succeeded INTEGER NOT NULL, cost_usd REAL NOT NULL)',
    'CREATE TABLE batch_chunk (batch_id VARCHAR(36) NOT NULL, number INTEGER NOT NULL, processed INTEGER NOT NULL, '
    'succeeded INTEGER NOT NULL, cost_usd REAL NOT NULL, PRIMARY KEY (batch_id, number))',
    'CREATE TABLE batch_item (id INTEGER PRIMARY KEY, batch_id VARCHAR(36) NOT NULL, status VARCHAR(16) NOT NULL)',
]
COUNTER_SQL = {
    "batch row": "UPDATE batch SET processed = processed + 1, succeeded = succeeded + 1, cost_usd = cost_usd + {p} WHERE id = {p}",
    "chunk row": ("UPDATE batch_chunk SET processed = processed + 1, succeeded = succeeded + 1, cost_usd = cost_usd + {p} "
                  "WHERE batch_id = {p} AND number = {p}"),
}


def connect(url: str):
    from db.database import open_database

    return open_database(url)


def setup(url: str, workers: int, items: int) -> str:
    db = connect(url)
    for table in ("batch_item", "batch_chunk", "batch"):
        db.execute_sql(f"DROP TABLE IF EXISTS {table}")
    for statement in SCHEMA:
        db.execute_sql(statement)
    batch_id = str(uuid.uuid4())
    p = db.param
    with db.atomic():
        db.execute_sql(f"INSERT INTO batch VALUES ({p}, 0, 0, 0)", (batch_id,))
        for w in range(workers):
            db.execute_sql(f"INSERT INTO batch_chunk VALUES ({p}, {p}, 0, 0, 0)", (batch_id, w))
        rows = [(w * items + i, batch_id) for w in range(workers) for i in range(items)]
        db.cursor().executemany(f"INSERT INTO batch_item VALUES ({p}, {p}, 'running')", rows)
    db.close()
    return batch_id


def settle(url: str, batch_id: str, strategy: str, worker: int, items: int, go) -> None:
    db = connect(url)
    p = db.param
    counter = COUNTER_SQL[strategy].format(p=p)
    args = (0.0001, batch_id) if strategy == "batch row" else (0.0001, batch_id, worker)
    go.wait()
    for i in range(items):
        with db.atomic():
            db.execute_sql(f"UPDATE batch_item SET status = 'succeeded' WHERE id = {p}", (worker * items + i,))
            db.execute_sql(counter, args)
    db.close()


def process(url, batch_id, strategy, first, threads, items, go) -> None:
    pool = [threading.Thread(target=settle, args=(url, batch_id, strategy, first + t, items, go)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()


def measure(url: str, strategy: str, processes: int, threads: int, items: int) -> float:
    batch_id = setup(url, processes * threads, items)
    go = multiprocessing.Event()
    procs = [multiprocessing.Process(target=process, args=(url, batch_id, strategy, n * threads, threads, items, go))
             for n in range(processes)]
    for proc in procs:
        proc.start()
    time.sleep(1.0)  # every connection open
    started = time.perf_counter()
    go.set()
    for proc in procs:
        proc.join()
    elapsed = time.perf_counter() - started
    db = connect(url)
    total = db.execute_sql("SELECT SUM(processed) FROM batch_chunk").fetchone()[0] if strategy == "chunk row" else \
        db.execute_sql("SELECT processed FROM batch").fetchone()[0]
    db.close()
    if total != processes * threads * items:
        raise SystemExit(f"{strategy}: counted {total}, expected {processes * threads * items}")
    return processes * threads * items / elapsed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", "-p", type=int, default=2)
    parser.add_argument("--threads", "-t", type=int, default=8)
    parser.add_argument("--items", type=int, default=300, help="items a worker thread settles (default 300)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    targets = []
    with tempfile.TemporaryDirectory(prefix="fleet-bench-counters-") as tmp, contextlib.ExitStack() as databases:
        targets.append(("SQLite (WAL)", f"sqlite:///{tmp}/counters.db"))
        postgres = os.environ.get("FLEET_TEST_POSTGRES_URL")
        if postgres:
            targets.append(("PostgreSQL", databases.enter_context(scratch_postgres(postgres, "fleet_bench"))))
        print(f"{args.processes} processes × {args.threads} threads, {args.items} items each, a transaction an item; "
              f"items settled a second, best of {args.runs}")
        for label, url in targets:
            rates = {s: max(measure(url, s, args.processes, args.threads, args.items) for _ in range(args.runs))
                     for s in COUNTER_SQL}
            print(f"{label:<14} batch row {rates['batch row']:>7,.0f}/s   chunk row {rates['chunk row']:>7,.0f}/s   "
                  f"(× {rates['chunk row'] / rates['batch row']:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
