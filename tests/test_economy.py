"""The economy lane: translation batches through OpenAI's Batch API (the simulator over HTTP, the
real `openai` client), settled by the scheduled poll through the live lane's checks, at half price,
each item exactly once: provider failures retried, expired batches resent for their unfinished
items only, a poller SIGKILLed half-way resumed, cancel, bad result files."""
from __future__ import annotations

import dataclasses
import os
import signal

import pytest
from peewee import fn

from actors import batches
from actors import translations as tr
from actors.batches import economy
from core.clients.openai_client import cost_usd
from core.settings import get_settings
from db.models.ai import AISpend
from db.models.batches import Batch, BatchItem, ProviderBatch
from tests.helpers import fleet, wait_for
from tests.test_batches import assert_counters_match_items, finish_rows
from tests.test_translations_workers import by_segment, digest, files

QUICK = 0.3  # seconds the simulator takes for a provider batch


def economy_translation(paths, out=None) -> Batch:
    return tr.plan_translation([str(p) for p in paths], "de", "nl", out_dir=out, lane="economy").start("tests")


def poll_until_finished(batch_id: str, worker=None) -> Batch:
    """The scheduled task's pass, run until the batch finishes: here, or as the task's actor on
    `worker` (as the scheduler sends it every minute)."""
    def done():
        if worker is None:
            batches.poll()
        else:  # the worker runs it soon; a pass that finds another running returns at once
            batches.poll_provider_batches.send()
        return Batch.get_by_id(batch_id).finished_at is not None
    wait_for(done, timeout=60, interval=QUICK / 2, message=f"economy batch {batch_id} to finish")
    return Batch.get_by_id(batch_id)


def submitted(simulator) -> list[list[str]]:
    """The custom_ids of each provider batch the simulator got, in order."""
    return simulator._get()["batches"]["submitted"]


def custom_ids(batch_id: str, positions) -> set[str]:
    return {str(i.id) for i in BatchItem.select().where((BatchItem.batch == batch_id) & BatchItem.position.in_(list(positions)))}


FILES = 200  # the batch


def test_an_economy_translation_batch_translates_each_file_once_at_half_the_live_price(db, broker, worker, openai_sim,
                                                                                        tmp_path):
    openai_sim.control(batch_seconds=QUICK)
    paths = files(tmp_path, FILES)
    live = tr.plan_translation([str(paths[0])], "de", "nl", out_dir=str(tmp_path / "live")).start("tests")
    batch = economy_translation(paths)
    assert batch.lane == "economy" and live.lane == "live"

    done = poll_until_finished(batch.id, worker)
    assert (done.status, done.succeeded, done.failed) == ("completed", FILES, 0)
    assert all((tmp_path / f"datei{n:02d}.nl.txt").read_text().startswith("[nl] Absatz") for n in range(FILES))
    counts = by_segment(openai_sim)
    assert all(counts[digest(p)] == 2 if p == paths[0] else counts[digest(p)] == 1 for p in paths)  # the live one too
    # each item priced at the Batch API's half of what the same request cost live
    live_done = wait_for(lambda: (b := Batch.get_by_id(live.id)).finished_at and b, message="the live batch")
    first = BatchItem.get((BatchItem.batch == batch.id) & (BatchItem.position == 0))
    assert live_done.cost_usd > 0 and first.cost_usd == pytest.approx(live_done.cost_usd / 2)
    spent = AISpend.get(AISpend.job_class == "economy:translation")
    assert spent.usd == pytest.approx(done.cost_usd)
    assert spent.usd == pytest.approx(cost_usd(get_settings().openai_model, spent.prompt_tokens,
                                               spent.completion_tokens) / 2)
    rows = list(ProviderBatch.select().where(ProviderBatch.batch == batch.id))
    assert [(r.status, r.provider_status, r.items, r.request_counts["completed"]) for r in rows] == [
        ("settled", "completed", FILES, FILES)]
    assert len(finish_rows(batch.id)) == 1
    assert_counters_match_items(done)


def test_the_items_are_split_into_files_within_the_providers_request_limit(db, broker, openai_sim, tmp_path, monkeypatch):
    monkeypatch.setattr("core.settings._current", dataclasses.replace(get_settings(), economy_file_requests=4))
    openai_sim.control(batch_seconds=QUICK)
    batch = economy_translation(files(tmp_path, 10))
    batches.submit(batch.id)
    assert [len(ids) for ids in submitted(openai_sim)] == [4, 4, 2]
    done = poll_until_finished(batch.id)
    assert (done.status, done.succeeded) == ("completed", 10)
    assert set(by_segment(openai_sim).values()) == {1}


def test_an_expired_provider_batch_is_resent_for_its_unfinished_items_only(db, broker, openai_sim, tmp_path):
    openai_sim.control(batch_seconds=QUICK, batch_next="expired", batch_expire_after=7)
    paths = files(tmp_path, 20)
    batch = economy_translation(paths)
    batches.submit(batch.id)
    done = poll_until_finished(batch.id)
    first, second = submitted(openai_sim)
    assert len(first) == 20 and set(second) == custom_ids(batch.id, range(7, 20))  # the unfinished 13 alone
    assert (done.status, done.succeeded, done.failed) == ("completed", 20, 0)
    assert set(by_segment(openai_sim).values()) == {1} and sum(by_segment(openai_sim).values()) == 20
    expired = ProviderBatch.get((ProviderBatch.batch == batch.id) & (ProviderBatch.provider_status == "expired"))
    assert expired.request_counts == {"total": 20, "completed": 7, "failed": 13}
    # the provider never tried them: resending does not spend their retry budget
    assert {i.attempts for i in BatchItem.select().where(BatchItem.batch == batch.id)} == {1}
    assert_counters_match_items(done)


def test_a_provider_batch_that_failed_is_sent_again_and_counts_an_attempt(db, broker, openai_sim, tmp_path):
    openai_sim.control(batch_seconds=QUICK, batch_next="failed")
    batch = economy_translation(files(tmp_path, 4))
    batches.submit(batch.id)
    done = poll_until_finished(batch.id)
    first, second = submitted(openai_sim)
    assert first == second
    assert (done.status, done.succeeded) == ("completed", 4)
    failed = ProviderBatch.get((ProviderBatch.batch == batch.id) & (ProviderBatch.provider_status == "failed"))
    assert "Simulated failure of the whole batch" in failed.error
    assert {i.attempts for i in BatchItem.select().where(BatchItem.batch == batch.id)} == {2}


def test_a_sender_that_died_after_the_create_is_adopted_and_nothing_is_sent_twice(db, broker, openai_sim, tmp_path):
    from core.clients.openai_batch import OpenAIBatchClient

    openai_sim.control(batch_seconds=QUICK)
    batch = economy_translation(files(tmp_path, 3))
    row, items = economy._claim(Batch.get_by_id(batch.id), 100)  # what `send` does, up to the create
    lines, _ = economy._lines(Batch.get_by_id(batch.id), items, row.id)
    client = OpenAIBatchClient(get_settings())
    file_id = client.upload(b"".join(lines), "died.jsonl")
    ProviderBatch.update(input_file_id=file_id).where(ProviderBatch.id == row.id).execute()
    client.create(file_id, row.id)  # it reached the provider; the sender died before writing that down
    done = poll_until_finished(batch.id)
    assert len(submitted(openai_sim)) == 1  # adopted by its metadata, not created again
    assert (done.status, done.succeeded) == ("completed", 3)
    assert set(by_segment(openai_sim).values()) == {1}


def test_items_the_provider_failed_are_retried_in_the_next_provider_batch(db, broker, openai_sim, tmp_path):
    paths = files(tmp_path, 8)
    batch = economy_translation(paths)
    doomed = custom_ids(batch.id, [2, 5])
    openai_sim.control(batch_seconds=QUICK, batch_fail_ids=sorted(doomed))
    batches.submit(batch.id)
    done = poll_until_finished(batch.id)
    first, second = submitted(openai_sim)
    assert len(first) == 8 and set(second) == doomed
    assert (done.status, done.succeeded, done.failed) == ("completed", 8, 0)
    retried = BatchItem.select().where((BatchItem.batch == batch.id) & BatchItem.position.in_([2, 5]))
    assert {i.attempts for i in retried} == {2}
    assert_counters_match_items(done)


def test_with_the_live_option_items_the_provider_failed_are_retried_on_the_live_lane(db, broker, worker, openai_sim,
                                                                                   tmp_path):
    paths = files(tmp_path, 6)
    batch = tr.plan_translation([str(p) for p in paths], "de", "nl", lane="economy",
                                extra={"economy_retry": "live"}).start("tests")
    doomed = custom_ids(batch.id, [1, 4])
    openai_sim.control(batch_seconds=QUICK, batch_fail_ids=sorted(doomed))
    done = poll_until_finished(batch.id)
    assert len(submitted(openai_sim)) == 1  # no second provider batch: the live lane did them
    assert (done.status, done.succeeded, done.failed) == ("completed", 6, 0)
    assert set(by_segment(openai_sim).values()) == {1}
    live = BatchItem.select().where((BatchItem.batch == batch.id) & BatchItem.position.in_([1, 4]))
    economy_item = BatchItem.get((BatchItem.batch == batch.id) & (BatchItem.position == 0))
    assert all(i.cost_usd == pytest.approx(2 * economy_item.cost_usd) for i in live)  # the live price
    assert_counters_match_items(done)


def test_an_item_failing_at_every_attempt_fails_with_its_code_when_the_budget_is_spent(db, broker, openai_sim, tmp_path):
    paths = files(tmp_path, 3)
    (tmp_path / "datei01.txt").write_text("Hallo {name}.\n")
    openai_sim.control(batch_seconds=QUICK, translation_mode="drop_placeholders")  # every answer loses {name}
    batch = economy_translation(paths)
    done = poll_until_finished(batch.id)
    bad = BatchItem.get((BatchItem.batch == batch.id) & (BatchItem.position == 1))
    assert (done.succeeded, done.failed) == (2, 1)
    assert bad.error_code == "ERR_INVALID_RESPONSE" and "placeholders changed" in bad.error_message
    assert bad.attempts == economy.max_attempts() and len(submitted(openai_sim)) == economy.max_attempts()
    assert not (tmp_path / "datei01.nl.txt").exists()  # an unusable answer writes nothing
    assert bad.cost_usd > 0  # paid for all the same


def test_bad_result_lines_fail_their_item_alone_and_the_batch_goes_on(db, broker, openai_sim, tmp_path):
    """An unknown custom_id is reported and ignored; a line cut short is its item's failed attempt."""
    openai_sim.control(batch_seconds=QUICK, batch_corrupt=True)
    batch = economy_translation(files(tmp_path, 6))
    batches.submit(batch.id)
    done = poll_until_finished(batch.id)
    first = ProviderBatch.select().where(ProviderBatch.batch == batch.id).order_by(ProviderBatch.id).first()
    assert "unknown custom_id 'no-such-item'" in first.error
    assert len(submitted(openai_sim)) == 2 and len(submitted(openai_sim)[1]) == 1  # the cut line's item, again
    assert (done.status, done.succeeded, done.failed) == ("completed", 6, 0)
    assert_counters_match_items(done)


def test_cancelling_an_economy_batch_cancels_its_provider_batch(db, broker, openai_sim, tmp_path):
    openai_sim.control(batch_seconds=60)
    batch = economy_translation(files(tmp_path, 5))
    batches.submit(batch.id)
    row = ProviderBatch.get(ProviderBatch.batch == batch.id)
    batches.cancel(batch.id)
    assert openai_sim._get()["batches"]["statuses"][row.provider_id] == "cancelled"
    done = poll_until_finished(batch.id)
    assert (done.status, done.cancelled, done.succeeded) == ("cancelled", 5, 0)
    assert by_segment(openai_sim) == {}
    assert len(finish_rows(batch.id)) == 1


def test_a_poller_killed_while_settling_is_resumed_without_settling_any_item_twice(db, broker, openai_sim, tmp_path,
                                                                                     processes):
    openai_sim.control(batch_seconds=QUICK)
    batch = economy_translation(files(tmp_path, 150))
    batches.submit(batch.id)
    row = ProviderBatch.get(ProviderBatch.batch == batch.id)
    wait_for(lambda: openai_sim._get()["batches"]["statuses"][row.provider_id] == "completed", timeout=60,
             message="the provider batch to complete")
    poller = processes.start("batches", "poll", name="poller")
    settled = lambda: BatchItem.select().where((BatchItem.batch == batch.id) & (BatchItem.status == "succeeded")).count()  # noqa: E731
    # the poller's boot (importing the openai SDK builds its models) may take long on a loaded machine
    wait_for(lambda: settled() > 0 or poller.poll() is not None, timeout=120, interval=0.005,
             message="the first items settled")
    processes.stop(poller, signal.SIGKILL)
    at_kill = settled()
    assert 0 < at_kill < 150, "the poller was killed after it had settled everything"
    assert ProviderBatch.get_by_id(row.id).status == "ended"

    done = poll_until_finished(batch.id)
    assert (done.status, done.succeeded, done.failed) == ("completed", 150, 0)
    assert len(submitted(openai_sim)) == 1  # nothing sent twice
    spent = AISpend.select(fn.SUM(AISpend.usd), fn.SUM(AISpend.requests)).where(
        AISpend.job_class == "economy:translation").tuples().get()
    assert spent[1] == 150 and spent[0] == pytest.approx(done.cost_usd)  # each item's cost recorded once
    assert_counters_match_items(done)


def test_the_economy_lane_is_chosen_on_the_command_line_and_shown(db, broker, openai_sim, tmp_path):
    paths = files(tmp_path, 2)
    started = fleet("translate", "--from", "de", "--to", "nl", "--lane", "economy", *map(str, paths),
                    env=dict(os.environ))
    assert started.returncode == 0, started.stderr
    assert "economy lane" in started.stdout
    batch = Batch.select().order_by(Batch.created_at.desc()).get()
    assert batch.lane == "economy"
    listed = fleet("batches", "list", env=dict(os.environ))
    assert "economy" in listed.stdout
    wrong = fleet("translate", "--from", "de", "--to", "nl", "--lane", "cheap", str(paths[0]), env=dict(os.environ))
    assert wrong.returncode == 2 and "cheap" in wrong.stderr


def test_failed_workout_days_retried_on_the_economy_lane_are_generated_once_at_half_price(db, broker, openai_sim):
    import jsonschema

    from actors.workouts import WORKOUT_DAY_SCHEMA, failed_filter, failed_plans, reset_plans
    from db.models.workouts import Plan, User, WorkoutPlan

    openai_sim.control(batch_seconds=QUICK)
    user = User.create(email="economy@x.io")
    plan = Plan.create(user=user, goal="strength", days=4)
    for day, status in enumerate(["failed", "generated", "failed", "failed"], start=1):
        WorkoutPlan.create(plan=plan, day=day, status=status, error_code="ERR_API_TIMEOUT" if status == "failed" else None)
    started = fleet("workouts", "retry-failed", "--lane", "economy", "--yes", env=dict(os.environ))
    assert started.returncode == 0, started.stderr
    assert "Found 3 failed workout plan(s)." in started.stdout and "Started economy batch" in started.stdout
    batch = Batch.get(Batch.kind == "workout_days")
    assert (batch.lane, batch.total) == ("economy", 3)
    assert reset_plans([plan.id]) == 0  # the nightly reset leaves the days the batch holds alone
    assert failed_plans(failed_filter()) == []  # nor does a second retry (CLI, panel, schedule) take them

    done = poll_until_finished(batch.id)
    assert (done.status, done.succeeded) == ("completed", 3)
    days = list(WorkoutPlan.select().where(WorkoutPlan.plan == plan).order_by(WorkoutPlan.day))
    assert [d.status for d in days] == ["generated"] * 4
    for d in (days[0], days[2], days[3]):
        jsonschema.validate(d.content, WORKOUT_DAY_SCHEMA)
        assert d.cost_usd == pytest.approx(BatchItem.get((BatchItem.batch == batch.id) & (BatchItem.key == str(d.id))).cost_usd)
    usage = AISpend.get(AISpend.job_class == "economy:workout_days")
    assert usage.usd == pytest.approx(cost_usd(get_settings().openai_model, usage.prompt_tokens,
                                               usage.completion_tokens) / 2)


def test_the_panel_starts_an_economy_translation_and_its_page_shows_the_provider_and_the_saving(admin_client, broker,
                                                                                                  openai_sim):
    import io
    import re

    from tests.panel import csrf_token

    openai_sim.control(batch_seconds=QUICK)
    form = admin_client.get("/admin/translations/").text
    assert 'value="economy"' in form and "half the price, done within 24 hours" in form
    data = {"csrf_token": csrf_token(admin_client, "/admin/translations/"), "source": "de", "target": "nl",
            "lane": "economy", "files": [(io.BytesIO(b"Hallo {name}.\n"), "brief.txt")]}
    response = admin_client.post("/admin/translations/", data=data, content_type="multipart/form-data")
    batch_id = re.fullmatch(r"/admin/batches/([0-9a-f-]{36})/", response.headers["Location"]).group(1)
    assert Batch.get_by_id(batch_id).lane == "economy"
    batches.submit(batch_id)
    row = ProviderBatch.get(ProviderBatch.batch == batch_id)
    running = admin_client.get(f"/api/batches/{batch_id}").json
    assert running["lane"] == "economy" and running["provider_batches"][0]["provider_id"] == row.provider_id
    assert row.provider_id in running["shown"]["provider"]

    done = poll_until_finished(batch_id)
    page = admin_client.get(f"/admin/batches/{batch_id}/").text
    assert "economy (Batch API" in page and f"{row.provider_id} completed: 1 of 1 done, 0 failed" in page
    assert f"{batches.usd(done.cost_usd)} saved (the live lane: {batches.usd(2 * done.cost_usd)})" in page
    assert "economy</span>" in admin_client.get("/admin/batches/").text
    bad = dict(data, lane="cheap", csrf_token=csrf_token(admin_client, "/admin/translations/"),
               files=[(io.BytesIO(b"x"), "a.txt")])
    refused = admin_client.post("/admin/translations/", data=bad, content_type="multipart/form-data")
    assert refused.status_code == 200 and "Not a valid choice" in refused.text


def test_the_failed_plans_page_retries_the_matching_days_on_the_economy_lane(admin_client, viewer_client, broker,
                                                                             openai_sim):
    from db.models.workouts import Plan, User, WorkoutPlan
    from tests.panel import csrf_token

    openai_sim.control(batch_seconds=QUICK)
    user = User.create(email="panel-economy@x.io")
    plan = Plan.create(user=user, goal="endurance", days=3)
    for day, code in enumerate(["ERR_API_TIMEOUT", "ERR_RATE_LIMIT", "ERR_API_TIMEOUT"], start=1):
        WorkoutPlan.create(plan=plan, day=day, status="failed", error_code=code)
    listing = admin_client.get("/admin/failed-plans/?flt0_error_code_equals=ERR_API_TIMEOUT").text
    assert 'id="retry-matching-economy"' in listing and "half the price" in listing
    viewer_token = csrf_token(viewer_client, "/admin/failed-plans/")
    refused = viewer_client.post("/admin/failed-plans/retry-matching-economy/", data={"csrf_token": viewer_token})
    assert refused.status_code == 403
    token = csrf_token(admin_client, "/admin/failed-plans/")
    response = admin_client.post("/admin/failed-plans/retry-matching-economy/?flt0_error_code_equals=ERR_API_TIMEOUT",
                                 data={"csrf_token": token})
    batch = Batch.get(Batch.kind == "workout_days")
    assert response.headers["Location"] == f"/admin/batches/{batch.id}/"
    assert (batch.lane, batch.total) == ("economy", 2)  # the two matching the filter
    done = poll_until_finished(batch.id)
    assert [d.status for d in WorkoutPlan.select().where(WorkoutPlan.plan == plan).order_by(WorkoutPlan.day)] == [
        "generated", "failed", "generated"]
    assert done.succeeded == 2
