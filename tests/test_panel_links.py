"""Links both ways between a job and what it worked on: a job's page links its plan and user
(by name), its series or episode, its batch and items, its schedule run; every row links its
jobs through a job-log filter that finds exactly them. Every link of a job page and of a batch
page resolves."""
from __future__ import annotations

import html
import json
import re

import actors.workouts_retry  # noqa: F401  (declares the workouts_retry batch kind)
from db.models import utcnow
from db.models.schedule import ScheduleRun
from db.models.series import Episode, Series
from db.models.workouts import User
from tests.panel import failed_plan, joblog


def links(page: str) -> list[str]:
    """The panel's own links of a page (not its static files, the logout form or anchors)."""
    found = {html.unescape(h) for h in re.findall(r'href="(/admin/[^"#]*)', page)}
    return sorted(h for h in found if not h.startswith(("/admin/static/", "/admin/logout")))


def crawl(client, page: str) -> list[str]:
    bad = [(href, client.get(href).status_code) for href in links(page)]
    return [(href, status) for href, status in bad if status != 200]


def job_ids(client, query: str) -> list[int]:
    page = client.get("/admin/jobs/" + query).text
    return sorted(int(i) for i in re.findall(r'href="/admin/jobs/details/\?id=(\d+)', page))


def call(*args, **kwargs) -> str:
    return json.dumps({"args": list(args), "kwargs": kwargs})


def test_a_job_page_links_its_plan_and_user_by_name_and_its_schedule_run_and_every_link_resolves(admin_client, db):
    plan = failed_plan("ann@x.io", code="ERR_NOT_FOUND")
    User.update(name="Ann Example").where(User.id == plan.user_id).execute()
    other = failed_plan("bob@x.io")
    job = joblog(1, status="failed", error_code="ERR_NOT_FOUND", args=call(plan.user_id, plan.id))
    joblog(2, args=call(other.user_id, other.id))
    ScheduleRun.create(name="workouts.rescue", slot_time=utcnow(), task="rescue_stale_plans", state="succeeded",
                       message_id=job.message_id)
    page = admin_client.get(f"/admin/jobs/details/?id={job.id}").text
    assert f"Plan #{plan.id} strength (1 d)" in page and "User Ann Example &lt;ann@x.io&gt;" in page
    assert f'href="/admin/jobs/?flt0_plan_equals={plan.id}"' in page
    assert f'href="/admin/failed-plans/?flt0_user_equals={plan.user_id}"' in page
    assert "Schedule run #" in page and 'href="/admin/schedule/history/?entry=workouts.rescue"' in page
    assert 'href="/admin/error-codes/#ERR_NOT_FOUND"' in page
    assert crawl(admin_client, page) == []

    assert job_ids(admin_client, f"?flt0_plan_equals={plan.id}") == [job.id]  # and not the other plan's job
    assert job_ids(admin_client, f"?flt0_user_equals={plan.user_id}") == [job.id]
    listing = admin_client.get("/admin/failed-plans/").text  # the way back: a row's plan links its jobs
    assert f'href="/admin/jobs/?flt0_plan_equals={plan.id}"' in listing and "Ann Example" in listing


def test_series_and_episode_jobs_link_their_rows_and_the_rows_their_jobs(admin_client, db):
    series = Series.create(tvdb_id=79126, name="Stargate")
    episode = Episode.create(tvdb_id=5, series=series, season=1, number=2, name="Pilot")
    other = Series.create(tvdb_id=79127, name="Other")
    series_job = joblog(1, job_class="series_data", queue="series", args=call(series.id))
    episode_job = joblog(2, job_class="episode_data", queue="series", args=call(episode.id))
    joblog(3, job_class="series_data", queue="series", args=call(other.id))
    joblog(4, job_class="series_data", queue="series", args=call(int(f"{series.id}0")))  # an id that starts alike

    page = admin_client.get(f"/admin/jobs/details/?id={series_job.id}").text
    assert f'href="/admin/series/details/?id={series.id}"' in page and "Stargate" in page
    assert crawl(admin_client, page) == []
    page = admin_client.get(f"/admin/jobs/details/?id={episode_job.id}").text
    assert f'href="/admin/episodes/details/?id={episode.id}"' in page and f"Series #{series.id}" in page
    assert crawl(admin_client, page) == []

    assert job_ids(admin_client, f"?flt0_series_equals={series.id}") == [series_job.id]
    assert job_ids(admin_client, f"?flt0_episode_equals={episode.id}") == [episode_job.id]
    assert f'href="/admin/jobs/?flt0_series_equals={series.id}"' in admin_client.get("/admin/series/").text
    assert f'href="/admin/jobs/?flt0_episode_equals={episode.id}"' in admin_client.get("/admin/episodes/").text
    assert admin_client.get("/admin/jobs/?flt0_series_equals=abc").status_code == 200  # a bad value: no filter


def test_a_batch_page_links_its_jobs_and_each_item_its_chunk_and_every_link_resolves(admin_client, broker):
    from actors.batches import create_batch

    batch = create_batch("workouts_retry", "Retry failed plans: test", [f"Plan #{n}" for n in range(5)],
                         chunk_size=2, options={"filter": {}})
    chunk_jobs = [joblog(n, job_class="batch_chunk_workouts_retry", queue="panel", args=call(batch.id, n))
                  for n in range(3)]
    joblog(9, job_class="batch_chunk_workouts_retry", queue="panel", args=call("0" * 8 + batch.id[8:], 0))
    page = admin_client.get(f"/admin/batches/{batch.id}/").text
    assert f'href="/admin/jobs/?flt0_batch_equals={batch.id}"' in page
    assert f'href="/admin/jobs/?flt0_batch_equals={batch.id}/2"' in page  # item 5 is in chunk 2
    assert crawl(admin_client, page) == []
    assert job_ids(admin_client, f"?flt0_batch_equals={batch.id}") == sorted(j.id for j in chunk_jobs)
    assert job_ids(admin_client, f"?flt0_batch_equals={batch.id}/1") == [chunk_jobs[1].id]

    job_page = admin_client.get(f"/admin/jobs/details/?id={chunk_jobs[1].id}").text
    assert f'href="/admin/batches/{batch.id}/"' in job_page and "its items 3–4 (chunk 1)" in job_page
    assert crawl(admin_client, job_page) == []
    assert f'href="/admin/jobs/?flt0_batch_equals={batch.id}"' in admin_client.get("/admin/batches/").text
