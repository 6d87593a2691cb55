"""Hostile or odd files, and hostile model answers, through the real batch runtime: a worker,
the OpenAI simulator over HTTP, files on disk. Each bad file fails alone; nothing unsafe is written."""
from __future__ import annotations

import json

import pytest

from actors import batches
from actors import translations as tr
from core.settings import get_settings
from db.models.batches import Batch
from tests import batch_kinds as bk
from tests.helpers import tmpfs
from tests.panel import flashes
from tests.test_batches_panel import upload
from tests.test_translations import finished, start


def by_name(batch_id: str) -> dict:
    return {i.key.rsplit("/", 1)[-1]: i for i in batches.items(batch_id)}


def test_hostile_json_files_fail_alone_with_err_input_file(db, broker, worker, openai_sim, tmp_path):
    files = {
        "deep.json": "[" * 100_000 + "]" * 100_000,
        "nan.json": '{"a": NaN, "t": "Hallo"}',
        "infinity.json": '{"a": -Infinity}',
        "twice.json": '{"t": "Hallo", "t": "Welt"}',
        "good.txt": "Guten Tag.\n",
        "also-good.json": '{"t": "Tschüss"}\n',
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    batch = start([tmp_path / name for name in files])
    done = finished(batch.id)
    assert (done.status, done.succeeded, done.failed) == ("completed", 2, 4)
    items = by_name(batch.id)
    for name in ("deep.json", "nan.json", "infinity.json", "twice.json"):
        assert items[name].error_code == "ERR_INPUT_FILE", (name, items[name].error_message)
        assert items[name].attempts == 1  # not retried
        assert not (tmp_path / name.replace(".json", ".nl.json")).exists()
    assert "nested 100,000 levels deep" in items["deep.json"].error_message
    assert "NaN is not a JSON number" in items["nan.json"].error_message
    assert "duplicate key 't'" in items["twice.json"].error_message
    assert (tmp_path / "good.nl.txt").read_text() == "[nl] Guten Tag.\n"
    assert json.loads((tmp_path / "also-good.nl.json").read_text()) == {"t": "[nl] Tschüss"}


def test_json_numbers_are_written_back_as_they_were(db, broker, worker, openai_sim, tmp_path):
    source = tmp_path / "zahlen.json"
    source.write_text('{"big": 1e400, "long": 12345678901234567890.5, "e": 1E2, "neg": -0.0, "int": 12,\n'
                      ' "huge": 123456789012345678901234567890, "t": "Hallo"}\n')
    done = finished(start([source]).id)
    assert done.succeeded == 1, batches.items(done.id)[0].error_message
    written = (tmp_path / "zahlen.nl.json").read_text()
    for number in ("1e400", "12345678901234567890.5", "1E2", "-0.0", "123456789012345678901234567890"):
        assert f": {number}," in written
    assert "Infinity" not in written and '"[nl] Hallo"' in written
    json.loads(written)  # still valid JSON


@pytest.mark.parametrize("hostile", [
    " <img src=x onerror=alert(1) title=",
    " [hier](javascript:alert(1))",
    " ![bild](https://evil.example/x.png)",
    " {{ constructor.constructor('alert(1)')() }}",
    " {!! $secret !!}",
    " {% debug %}",
    " <script>alert(1)</script>",
])
def test_an_answer_adding_markup_fails_its_item_and_writes_nothing(db, broker, worker, openai_sim, tmp_path, hostile):
    openai_sim.control(translation_append=hostile)
    source = tmp_path / "brief.md"
    source.write_text("Hallo {name}, lies den <b>Brief</b> auf [der Seite](https://example.org).\n")
    done = finished(start([source]).id)
    assert (done.succeeded, done.failed) == (0, 1)
    [item] = batches.items(done.id)
    assert item.error_code == "ERR_INVALID_RESPONSE" and "added markup the source did not have" in item.error_message
    assert not (tmp_path / "brief.nl.md").exists()


def test_markup_the_source_has_may_come_back(db, broker, worker, openai_sim, tmp_path):
    source = tmp_path / "brief.md"
    source.write_text("Hallo {{ name }}, lies <b>das</b> [hier](https://example.org) und {% raw %}.\n")
    done = finished(start([source]).id)
    assert done.succeeded == 1, batches.items(done.id)[0].error_message


def test_an_unexpected_error_fails_its_item_alone_not_its_chunk(db, broker, worker):
    batch = batches.create_batch(bk.KIND, "crash in the middle", ["ok:a", "crash:b", "ok:c"])
    done = finished(batch.id)
    assert (done.status, done.succeeded, done.failed) == ("completed", 2, 1)
    items = batches.items(batch.id)
    assert [i.status for i in items] == ["succeeded", "failed", "succeeded"]
    assert items[1].error_code == "ERR_INTERNAL" and "RecursionError" in items[1].error_message
    assert [position for _, position in bk.runs(batch.id)] == [0, 1, 2]  # each ran once


def test_a_long_upload_name_is_shortened_on_disk_and_kept_for_display(admin_client, broker, worker, openai_sim):
    long_name = "ü" * 40 + "x" * 300 + ".txt"  # 380 bytes: no file system takes it
    response = upload(admin_client, [(long_name, b"Hallo.\n")])
    assert response.status_code == 302, flashes(response.text)
    batch = finished(Batch.get().id)
    [item] = batches.items(batch.id)
    stored = item.key.rsplit("/", 1)[1]
    assert len(stored.encode()) <= tr.MAX_UPLOAD_NAME and stored.endswith(".txt")
    assert batch.succeeded == 1
    assert batch.options["original_names"] == {stored: long_name}
    download = admin_client.get(f"/admin/translations/{batch.id}/download/0")
    assert download.status_code == 200 and download.data == b"[nl] Hallo.\n"


def test_an_upload_the_disk_cannot_hold_leaves_nothing_behind(admin_client, broker):
    uploads = get_settings().var_dir / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    with tmpfs(uploads, "1m"):  # the first file fits, the second does not
        response = upload(admin_client, [("a.txt", b"x" * 700_000), ("b.txt", b"y" * 700_000)])
        assert response.status_code == 200
        assert any("could not be stored" in line and "nothing was kept" in line for line in flashes(response.text))
        assert list(uploads.iterdir()) == []
    assert Batch.select().count() == 0
