"""The panel's batch pages, their JSON, their actions and the "New translation" form, through
Flask's test client (the live page in a real browser is in tests/test_translations_browser.py)."""
from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from actors import batches as ops
from core.settings import get_settings
from db.models.batches import Batch, BatchItem
from tests import batch_kinds as bk
from tests.panel import SCRIPT, csrf_token, flashes
from tests.test_batches import finished


def post(client, path: str, **data):
    return client.post(path, data={"csrf_token": csrf_token(client, "/admin/"), **data}, follow_redirects=True)


def test_the_list_shows_each_batch_with_its_progress(admin_client, broker, worker):
    done = ops.create_batch(bk.KIND, "finished one", ["ok:a", "fail:ERR_AUTH:b"])
    finished(done.id)
    waiting = ops.create_batch(bk.KIND, "queued one", ["ok:c"], chunk_size=1)
    finished(waiting.id)
    Batch.update(status="queued", finished_at=None).where(Batch.id == waiting.id).execute()  # as if not yet worked
    page = admin_client.get("/admin/batches/").text
    row = re.search(rf'<tr data-batch="{done.id}" data-running="0">(.*?)</tr>', page, re.S).group(1)
    assert "finished one" in row and "completed with 1 failure" in row and "badge-warning" in row
    assert 'data-width="100.0"' in row and "2 of 2" in row and "$0.003000" in row
    assert f'data-batch="{waiting.id}"' in page
    only = admin_client.get("/admin/batches/?status=completed").text
    assert "finished one" in only and "queued one" not in only
    listed = admin_client.get("/api/batches?status=completed").json["batches"]
    assert [b["id"] for b in listed] == [done.id] and listed[0]["shown"]["progress"] == "2 of 2"


@pytest.mark.parametrize("query", ["?status=bogus", "?offset=-1", "?offset=abc", "?status=%3Cscript%3E"])
def test_a_bad_list_query_is_a_message_never_an_error(admin_client, query):
    response = admin_client.get("/admin/batches/" + query)
    assert response.status_code == 200 and flashes(response.text)
    assert admin_client.get("/api/batches" + query).status_code == 400


def test_the_detail_page_and_its_json_show_the_same_batch(admin_client, broker, worker):
    batch = ops.create_batch(bk.KIND, "details", ["ok:a", "fail:ERR_QUOTA_EXCEEDED:b", "ok:c"])
    finished(batch.id)
    page = admin_client.get(f"/admin/batches/{batch.id}/").text
    data = admin_client.get(f"/api/batches/{batch.id}").json
    assert data["status_label"] == "completed with 1 failure" and data["finished"] is True
    for shown in ("3 of 3", "completed with 1 failure", data["shown"]["cost"], "ERR_QUOTA_EXCEEDED",
                  "The account&#39;s quota or credit at the provider is used up; top it up, then retry."):
        assert shown in page
    assert data["errors"] == [{"code": "ERR_QUOTA_EXCEEDED", "count": 1,
                               "sentence": "The account's quota or credit at the provider is used up; top it up, then retry."}]
    assert [i["status"] for i in data["items"]] == ["succeeded", "failed", "succeeded"]
    failed = admin_client.get(f"/api/batches/{batch.id}?items=failed").json["items"]
    assert [i["key"] for i in failed] == ["fail:ERR_QUOTA_EXCEEDED:b"]
    assert "planned failure of fail:ERR_QUOTA_EXCEEDED:b" in admin_client.get(f"/admin/batches/{batch.id}/?items=failed").text
    assert 'data-finished="1"' in page  # the page's script does not poll a finished batch
    assert data["actions"] == {"cancel": False, "resume": False, "retry": True}
    assert re.search(r'data-action="cancel"\s+hidden', page) and re.search(r'data-action="retry"\s+>', page)


@pytest.mark.parametrize("query", ["?items=nope", "?offset=x", "?limit=0", "?limit=100000"])
def test_a_bad_item_query_is_a_message_never_an_error(admin_client, broker, query):
    batch = ops.create_batch(bk.KIND, "query", ["ok:a"])
    response = admin_client.get(f"/admin/batches/{batch.id}/{query}")
    assert response.status_code == 200 and flashes(response.text)
    assert admin_client.get(f"/api/batches/{batch.id}{query}").status_code == 400


def test_text_from_items_is_escaped(admin_client, broker, worker):
    batch = ops.create_batch(bk.KIND, SCRIPT, [f"fail:ERR_BAD_REQUEST:{SCRIPT}"])
    finished(batch.id)
    for path in (f"/admin/batches/{batch.id}/", "/admin/batches/"):
        page = admin_client.get(path).text
        assert SCRIPT not in page and "&lt;script&gt;" in page


def test_admins_cancel_resume_and_retry_from_the_page(admin_client, broker):
    batch = ops.create_batch(bk.KIND, "actions", [f"ok:{i}" for i in range(5)], chunk_size=2)
    page = admin_client.get(f"/admin/batches/{batch.id}/").text
    assert all(f'id="batch-{a}"' in page for a in ("cancel", "resume", "retry"))
    resumed = post(admin_client, f"/admin/batches/{batch.id}/resume/")
    assert "Sent 0 lost chunk job(s) again; 3 chunk(s) still queued or running." in flashes(resumed.text)
    cancelled = post(admin_client, f"/admin/batches/{batch.id}/cancel/")
    assert "Cancelled 5 pending item(s); running items finish." in flashes(cancelled.text)
    assert Batch.get_by_id(batch.id).status == "cancelled"
    retried = post(admin_client, f"/admin/batches/{batch.id}/retry/")
    assert f"batch {batch.id} was cancelled; nothing retried" in flashes(retried.text)
    unknown = post(admin_client, "/admin/batches/nope/retry/")
    assert unknown.request.path == "/admin/batches/" and "no batch with id nope" in flashes(unknown.text)


def test_viewers_see_batches_but_cannot_act(viewer_client, broker):
    batch = ops.create_batch(bk.KIND, "look only", ["ok:a"])
    page = viewer_client.get(f"/admin/batches/{batch.id}/").text
    assert "look only" in page and 'id="batch-cancel"' not in page
    assert "New translation" not in viewer_client.get("/admin/batches/").text
    for action in ("cancel", "resume", "retry"):
        assert viewer_client.post(f"/admin/batches/{batch.id}/{action}/",
                                  data={"csrf_token": csrf_token(viewer_client, "/admin/")}).status_code == 403
    assert BatchItem.get(BatchItem.batch == batch.id).status == "pending"


def test_actions_need_the_csrf_token(admin_client, broker):
    batch = ops.create_batch(bk.KIND, "csrf", ["ok:a"])
    assert admin_client.post(f"/admin/batches/{batch.id}/cancel/").status_code == 400
    assert Batch.get_by_id(batch.id).status == "queued"


# -- the "New translation" form ---------------------------------------------------------------

def upload(client, files, source="de", target="nl"):
    data = {"csrf_token": csrf_token(client, "/admin/translations/"), "source": source, "target": target,
            "files": [(io.BytesIO(content), name) for name, content in files]}
    return client.post("/admin/translations/", data=data, content_type="multipart/form-data")


def test_the_form_starts_a_translation_and_redirects_to_its_batch(admin_client, broker, worker, openai_sim):
    form = admin_client.get("/admin/translations/").text
    assert '<option selected value="de">German (de)</option>' in form and 'value="nl">Dutch (nl)' in form
    response = upload(admin_client, [("brief.txt", b"Hallo {name}.\n"), ("../../etc/evil.md", b"# Titel\n")])
    batch_id = re.fullmatch(r"/admin/batches/([0-9a-f-]{36})/", response.headers["Location"]).group(1)
    batch = finished(batch_id)
    assert (batch.kind, batch.total, batch.succeeded, batch.created_by) == ("translation", 2, 2, "admin@example.com")
    var_dir = get_settings().var_dir
    items = ops.items(batch_id)
    assert [i.key.rsplit("/", 1)[1] for i in items] == ["brief.txt", "etc_evil.md"]
    assert all(i.key.startswith(str(var_dir / "uploads")) for i in items)
    page = admin_client.get(response.headers["Location"]).text
    assert '<td class="text-break">../../etc/evil.md</td>' in page  # the name it was uploaded with
    assert str(var_dir) not in page  # and no path on the server
    shown = [i["shown"]["name"] for i in admin_client.get(f"/api/batches/{batch_id}").json["items"]]
    assert shown == ["brief.txt", "../../etc/evil.md"]
    links = re.findall(r'href="(/admin/translations/[^"]+/download/\d+)"', page)
    assert len(links) == 2
    download = admin_client.get(links[0])
    assert download.status_code == 200 and download.data == b"[nl] Hallo {name}.\n"
    assert "attachment" in download.headers["Content-Disposition"]
    assert admin_client.get(f"/admin/translations/{batch_id}/download/9/").status_code == 404

    ops.prune(days=0, keep=0)  # the panel's files go with the batch (the var/ of this xdist worker
    # may hold other tests' files, whose batches the db fixture emptied: only this batch's are looked for)
    tokens = {Path(i.key).parent.name for i in items}  # the upload's folder in uploads/ and translations/
    assert not any((var_dir / folder / token).exists() for folder in ("uploads", "translations") for token in tokens)


@pytest.mark.parametrize("files,source,target,error", [
    ([("a.txt", b"x")], "de", "de", "Choose a language other than the one to translate from."),
    ([], "de", "nl", "This field is required."),
    ([("a.txt", b"x")], "xx", "nl", "Not a valid choice."),
])
def test_the_form_refuses_bad_input_and_creates_nothing(admin_client, broker, files, source, target, error):
    response = upload(admin_client, files, source, target)
    assert response.status_code == 200 and error in response.text
    assert Batch.select().count() == 0


def test_the_form_refuses_uploads_too_large_and_viewers(admin_client, viewer_client, broker):
    from admin.views import translations as view

    big = upload(admin_client, [("big.txt", b"x" * (view.MAX_UPLOAD_BYTES + 1))])
    assert big.status_code == 302
    assert "larger than 20 MB together" in " ".join(flashes(admin_client.get("/admin/translations/").text))
    assert upload(viewer_client, [("a.txt", b"x")]).status_code == 403
    assert Batch.select().count() == 0


def test_download_serves_only_the_panels_own_outputs(admin_client, broker, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("not yours")
    batch = ops.create_batch("translation", "cli", [str(outside)], options={"from": "de", "to": "nl", "out": None})
    BatchItem.update(status="succeeded", result={"output": str(outside)}).where(BatchItem.batch == batch.id).execute()
    assert admin_client.get(f"/admin/translations/{batch.id}/download/0").status_code == 404
