"""Translations: the file formats and their checks, then whole batches through a real worker
and the OpenAI simulator over HTTP (which marks each segment `[nl] …` and counts it)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import requests

from actors import batches
from actors import translations as tr
from core.errors import JobError
from core.simulators.openai_sim import segment_digest
from db.models.batches import Batch, BatchItem
from tests.helpers import fleet, wait_for

GERMAN = "Hallo {name}, du hast :count neue Nachrichten.\n\nDies ist der <b>zweite</b> Absatz mit %s.\n"


def finished(batch_id: str, timeout: float = 60) -> Batch:
    return wait_for(lambda: (b := Batch.get_by_id(batch_id)).finished_at and b, timeout=timeout,
                    message="the translation batch to finish")


def start(files, source="de", target="nl", **kwargs) -> Batch:
    return tr.plan_translation([str(f) for f in files], source, target, **kwargs).start("ops@example.com")


def translations(simulator) -> dict:
    """The simulator's translation counters (segments, and by segment SHA-1)."""
    return requests.get(f"{simulator.base_url}/_control", timeout=5).json()["translations"]


def marked(text: str, target: str = "nl") -> str:
    """What the simulator makes of a plain-text file."""
    document = tr.TextDocument(text, markdown=False)
    return document.render(iter(f"[{target}] {s}" for s in document.segments))


# -- documents --------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "", "one line without newline", "a\n\nb\n", "\n\n  indented paragraph  \n\n\n", "crlf\r\n\r\nlines\r\n",
    "# Title\n\n```python\nprint(1)\n\n\nx = 2\n```\n\nAfter the fence.\n", "```\nunclosed fence\n\nstill code",
])
def test_a_text_cut_into_pieces_joins_back_into_itself(text):
    for markdown in (False, True):
        assert "".join(piece for piece, _ in tr.text_pieces(text, markdown)) == text


def test_markdown_keeps_fenced_code_and_blank_lines_out_of_the_segments():
    text = "# Titel\n\nErster Absatz,\nzweite Zeile.\n\n```sh\necho 'nicht übersetzen'\n```\n"
    document = tr.TextDocument(text, markdown=True)
    assert document.segments == ["# Titel", "Erster Absatz,\nzweite Zeile."]
    assert document.render(iter(["# Title", "First paragraph,\nsecond line."])) == (
        "# Title\n\nFirst paragraph,\nsecond line.\n\n```sh\necho 'nicht übersetzen'\n```\n")


def test_long_paragraphs_are_cut_within_the_models_limits():
    sentence = "Dies ist ein ziemlich langer Satz, der immer wieder vorkommt. "
    paragraph = sentence * 200  # 12,600 characters, no line break
    text = f"Kurz.\n\n{paragraph.strip()}\n\n{'x' * 9_000}\n"
    document = tr.TextDocument(text, markdown=False)
    assert max(len(s) for s in document.segments) <= tr.MAX_SEGMENT_CHARS
    assert len(document.segments) > 5
    assert document.render(iter(document.segments)) == text
    requests = list(tr.requests_for(document.segments))
    assert all(sum(map(len, r)) <= tr.MAX_REQUEST_CHARS for r in requests)
    assert [s for r in requests for s in r] == document.segments


def test_json_files_keep_their_keys_and_translate_their_strings():
    text = '{\n  "greeting": "Hallo",\n  "nested": {"list": ["eins", 2, true, null, ""], "count": 3}\n}\n'
    document = tr.JsonDocument(text)
    assert document.segments == ["Hallo", "eins"]
    out = document.render(iter(["Hoi", "een"]))
    assert json.loads(out) == {"greeting": "Hoi", "nested": {"list": ["een", 2, True, None, ""], "count": 3}}
    assert out.endswith("}\n") and "\n  " in out
    assert json.loads(tr.JsonDocument('"nur ein Text"').render(iter(["alleen tekst"]))) == "alleen tekst"
    with pytest.raises(JobError) as bad:
        tr.JsonDocument('{"a": "unterminated}')
    assert bad.value.code == "ERR_INPUT_FILE" and "not valid JSON" in str(bad.value)


@pytest.mark.parametrize("source,translated,problem", [
    ("Hallo {name}", "Hoi {name}", None),
    ("Hallo {name}", "Hoi {naam}", "lost {name}; added {naam}"),
    ("%s von %d, %(total)s", "%s van %d, %(total)s", None),
    ("%s von %d", "%d van %s", None),  # order may change, the set may not
    ("Du hast :count Nachrichten", "Je hebt :aantal berichten", "lost :count; added :aantal"),
    ("Um 10:30 Uhr: https://example.com", "Om 10:30 uur: https://example.com", None),
    ("<b>fett</b> und <a href=\"/x\">Link</a>", "<b>vet</b> en <a href=\"/x\">link</a>", None),
    ("<b>fett</b>", "vet", "lost </b>, <b>"),
    ("{{ user.name }} und {0}", "{{ user.name }} en", "lost {0}"),
])
def test_placeholders_must_come_back_unchanged(source, translated, problem):
    assert tr.placeholder_problem(source, translated) == problem


def test_inputs_that_cannot_be_translated_fail_with_their_code(tmp_path):
    (tmp_path / "bin.txt").write_bytes(b"PK\x03\x04\x00\x00binary")
    (tmp_path / "latin1.txt").write_bytes("Grüße".encode("latin-1"))
    (tmp_path / "big.txt").write_bytes(b"a" * (tr.MAX_FILE_BYTES + 1))
    (tmp_path / "dir.txt").mkdir()
    (tmp_path / "bom.txt").write_bytes("\ufeffMit BOM".encode())
    for name, reason in [("bin.txt", "binary"), ("latin1.txt", "not UTF-8"), ("big.txt", "at most"),
                         ("dir.txt", "not a regular file"), ("missing.txt", "no such file")]:
        with pytest.raises(JobError) as failed:
            tr.read_input(tmp_path / name)
        assert failed.value.code == "ERR_INPUT_FILE" and reason in str(failed.value), name
    assert tr.read_input(tmp_path / "bom.txt") == "Mit BOM"


def test_outputs_are_written_atomically_beside_the_input_or_into_out(tmp_path):
    source = tmp_path / "notes.de.md"
    assert tr.output_path(source, "nl", None) == tmp_path / "notes.de.nl.md"
    assert tr.output_path(tmp_path / "README", "nl", None) == tmp_path / "README.nl"
    assert tr.output_path(source, "nl", tmp_path / "out") == tmp_path / "out" / "notes.de.md"
    target = tmp_path / "out" / "a.txt"
    tr.write_atomically(target, "eins")
    tr.write_atomically(target, "zwei")
    assert target.read_text() == "zwei" and sorted(p.name for p in target.parent.iterdir()) == ["a.txt"]


def test_language_codes():
    assert tr.language_name("de") == "German" and tr.language_name("nl") == "Dutch"
    assert [tr.language_name(c) for c in ("xx", "DE", "deu", "", None)] == [None] * 5
    assert ("nl", "Dutch") in tr.languages()


# -- batches through a worker and the simulator ----------------------------------------------

def test_one_file_german_to_dutch(db, broker, worker, openai_sim, tmp_path):
    source = tmp_path / "brief.txt"
    source.write_text(GERMAN)
    batch = start([source])
    assert batch.title == "Translate brief.txt de → nl" and batch.total == 1
    done = finished(batch.id)
    assert (done.status, done.succeeded) == ("completed", 1)
    out = tmp_path / "brief.nl.txt"
    assert out.read_text() == marked(GERMAN)
    assert out.read_text().startswith("[nl] Hallo {name}, du hast :count neue Nachrichten.\n\n[nl] Dies ist")
    item = batches.items(batch.id)[0]
    assert item.result == {"output": str(out), "format": "text", "segments": 2, "requests": 1, "characters": len(GERMAN)}
    assert item.tokens > 0 and item.cost_usd > 0  # from the response's usage, gpt-4o-mini prices
    assert (done.tokens, done.cost_usd) == (item.tokens, pytest.approx(item.cost_usd))
    assert translations(openai_sim)["segments"] == 2 and openai_sim.stats()["requests"] == 1


def test_fifteen_files_every_one_counted_and_written(db, broker, worker, openai_sim, tmp_path):
    files = []
    for n in range(15):
        if n % 3 == 0:
            path = tmp_path / f"seite{n}.md"
            path.write_text(f"# Seite {n}\n\nText der Seite {n} mit {{name}}.\n\n```\ncode {n}\n```\n")
        elif n % 3 == 1:
            path = tmp_path / f"texte{n}.json"
            path.write_text(json.dumps({"title": f"Titel {n}", "items": [f"Eintrag {n}.1", f"Eintrag {n}.2"]}))
        else:
            path = tmp_path / f"brief{n}.txt"
            path.write_text(f"Brief Nummer {n}.\n\nMit freundlichen Grüßen aus {n}, %s\n")
        files.append(path)
    out_dir = tmp_path / "nl"
    batch = start(files, out_dir=str(out_dir))
    done = finished(batch.id)
    assert (done.status, done.total, done.processed, done.succeeded, done.failed) == ("completed", 15, 15, 15, 0)
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(f.name for f in files)
    assert (out_dir / "seite0.md").read_text() == "[nl] # Seite 0\n\n[nl] Text der Seite 0 mit {name}.\n\n```\ncode 0\n```\n"
    assert json.loads((out_dir / "texte1.json").read_text()) == {"title": "[nl] Titel 1",
                                                                 "items": ["[nl] Eintrag 1.1", "[nl] Eintrag 1.2"]}
    segments = [s for f in files for s in tr.parse(f.read_text(), tr.file_format(f)).segments]
    by_segment = translations(openai_sim)["by_segment"]
    assert len(set(segments)) == len(segments)
    assert {segment_digest(s): 1 for s in segments} == by_segment  # every segment exactly once
    items = batches.items(batch.id)
    assert done.cost_usd == pytest.approx(sum(i.cost_usd for i in items)) and done.tokens == sum(i.tokens for i in items)


@pytest.mark.parametrize("fault,code", [("401", "ERR_AUTH"), ("quota", "ERR_QUOTA_EXCEEDED")])
def test_openai_refusing_fails_every_item_with_its_code_and_the_batch_completes(db, broker, worker, openai_sim,
                                                                                tmp_path, fault, code):
    openai_sim.control(fail={fault: 1.0})
    files = []
    for n in range(3):
        files.append(tmp_path / f"f{n}.txt")
        files[-1].write_text(f"Text {n}\n")
    batch = start(files)
    done = finished(batch.id)
    assert (done.status, done.failed, done.succeeded) == ("completed", 3, 0)
    assert batches.status_label(done) == "completed with 3 failures"
    assert {i.error_code for i in batches.items(batch.id)} == {code}
    assert not list(tmp_path.glob("*.nl.txt"))


def test_changed_placeholders_fail_the_item_and_write_nothing(db, broker, worker, openai_sim, tmp_path):
    openai_sim.control(translation_mode="drop_placeholders")
    keeps, loses = tmp_path / "ohne.txt", tmp_path / "mit.txt"
    keeps.write_text("Ohne Platzhalter.\n")
    loses.write_text("Hallo {name}!\n")
    batch = start([keeps, loses])
    done = finished(batch.id)
    assert (done.succeeded, done.failed) == (1, 1)
    failed = batches.items(batch.id, "failed")[0]
    assert failed.error_code == "ERR_INVALID_RESPONSE" and "placeholders changed (lost {name})" in failed.error_message
    assert failed.cost_usd > 0  # the answer was paid for
    assert (tmp_path / "ohne.nl.txt").exists() and not (tmp_path / "mit.nl.txt").exists()


def test_an_unreadable_or_binary_input_fails_its_item_not_the_batch(db, broker, worker, openai_sim, tmp_path):
    good, binary, gone = tmp_path / "gut.txt", tmp_path / "bild.txt", tmp_path / "weg.txt"
    good.write_text("Gut.\n")
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    gone.write_text("Gleich weg.\n")
    batch = start([good, binary, gone])
    gone.unlink()  # removed after the batch was started
    done = finished(batch.id)
    assert (done.status, done.succeeded, done.failed) == ("completed", 1, 2)
    assert [(i.key.rsplit("/", 1)[-1], i.error_code) for i in batches.items(batch.id)] == [
        ("gut.txt", None), ("bild.txt", "ERR_INPUT_FILE"), ("weg.txt", "ERR_INPUT_FILE")]
    assert openai_sim.stats()["requests"] == 1


# -- the command ------------------------------------------------------------------------------

def test_fleet_translate_starts_a_batch_and_watches_it_to_the_end(db, broker, worker, openai_sim, tmp_path):
    source = tmp_path / "hallo.md"
    source.write_text("# Hallo\n\nWelt.\n")
    result = fleet("translate", "--from", "de", "--to", "nl", "--watch", str(source), env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("Started translation batch ") and lines[0].endswith(": 1 file(s), de → nl.")
    assert lines[-1].startswith("Batch ") and "completed: 1 succeeded, 0 failed, 0 cancelled of 1" in lines[-1]
    assert (tmp_path / "hallo.nl.md").read_text() == "[nl] # Hallo\n\n[nl] Welt.\n"
    batch = Batch.get()
    assert batch.created_by.endswith("(cli)") and batch.options["from"] == "de"


@pytest.mark.parametrize("args,message", [
    (["--from", "xx", "--to", "nl", "{file}"], "fleet: --from 'xx' is not a language code (ISO 639-1, two letters, e.g. de, nl)"),
    (["--from", "de", "--to", "dutch", "{file}"], "fleet: --to 'dutch' is not a language code (ISO 639-1, two letters, e.g. de, nl)"),
    (["--from", "de", "--to", "de", "{file}"], "fleet: --from and --to are the same language"),
    (["--from", "de", "--to", "nl", "{file}", "{missing}"], "fleet: no such file: {missing}"),
    (["--from", "de", "--to", "nl", "{dir}"], "fleet: not a file: {dir}"),
    (["--from", "de", "--to", "nl", "--out", "{file}", "{file}"], "fleet: --out {file} is not a directory"),
    (["--from", "de", "--to", "nl", "--out", "{dir}", "{file}"],
     "fleet: {file} would be overwritten by its own translation; choose another --out"),
    (["--from", "de", "--to", "nl", "--out", "{dir}/out", "{file}", "{dir}/sub/brief.txt"],
     "fleet: {file} and {dir}/sub/brief.txt would both be written to {dir}/out/brief.txt"),
])
def test_fleet_translate_refuses_bad_input_with_one_line_and_creates_nothing(db, tmp_path, args, message):
    (tmp_path / "sub").mkdir()
    names = {"file": str(tmp_path / "brief.txt"), "missing": str(tmp_path / "fehlt.txt"), "dir": str(tmp_path)}
    Path(names["file"]).write_text("Text\n")
    (tmp_path / "sub" / "brief.txt").write_text("Text\n")
    result = fleet("translate", *[a.format(**names) for a in args], env=dict(os.environ))
    assert result.returncode == 2
    assert result.stderr.strip() == message.format(**names) and result.stdout == ""
    assert Batch.select().count() == 0 and BatchItem.select().count() == 0
    assert not (tmp_path / "out").exists()
