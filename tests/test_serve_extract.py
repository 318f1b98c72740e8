"""`modernenc serve` with a span tagger: /v1/extract on a real uvicorn server and a real HTTP client.

Spans are checked against `modernenc predict` on the same folder, texts' digests against hashlib, the
audit trail against the SQLite file read with sqlite3, and an older trail (schema 1, no extractions table)
against the rows it held before a server opened it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3

import httpx
import pytest
from conftest import cli_error, run_cli
from serve_helpers import TAGS, TEXTS, build_classifier, build_tagger, running

from modernenc.serve.app import create_app
from modernenc.serve.audit import SQLiteAuditStore
from modernenc.serve.engine import load_engine
from modernenc.serve.settings import ServeSettings
from modernenc.tasks.extract import predict_spans_file


@pytest.fixture(scope="module")
def tagger_dir(tmp_path_factory):
    return build_tagger(tmp_path_factory.mktemp("tagger"))


@pytest.fixture(scope="module")
def expected(tagger_dir, tmp_path_factory):
    """`modernenc predict` on the tagger: text -> its spans."""
    folder = tmp_path_factory.mktemp("predict-spans")
    src = folder / "in.jsonl"
    src.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in TEXTS), "utf-8")
    predict_spans_file(tagger_dir, src, folder / "out.jsonl", progress=False)
    rows = [json.loads(line) for line in (folder / "out.jsonl").read_text("utf-8").splitlines()]
    return {row["text"]: row["spans"] for row in rows}


@pytest.fixture(scope="module")
def server(tagger_dir, tmp_path_factory):
    db = tmp_path_factory.mktemp("audit") / "audit.sqlite"
    settings = ServeSettings(audit_db=db, max_wait_ms=50, audit_store_text=True)
    app = create_app(load_engine(tagger_dir, "fp32", "cpu"), settings, SQLiteAuditStore(db))
    with running(app) as url:
        yield url, db


def post(url, path, body):
    return httpx.post(f"{url}{path}", json=body, timeout=30)


def extraction_rows(db):
    with sqlite3.connect(db) as connection:
        connection.row_factory = sqlite3.Row
        return {r["extraction_id"]: dict(r) for r in connection.execute("SELECT * FROM extractions")}


def assert_same_spans(got, want, text):
    assert [(s["start"], s["end"], s["label"], s["text"]) for s in got] == [
        (s["start"], s["end"], s["label"], s["text"]) for s in want
    ], text
    assert [s["score"] for s in got] == pytest.approx([s["score"] for s in want], abs=1e-5), text


def test_extract_matches_predict_in_input_order_and_every_text_is_audited(server, tagger_dir, expected):
    url, db = server
    response = post(url, "/v1/extract", {"texts": TEXTS})
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["X-Request-ID"] == body["request_id"]
    weights = hashlib.sha256((tagger_dir / "model.safetensors").read_bytes()).hexdigest()
    assert body["model"] == {"digest": weights, "dtype": "fp32"}
    assert sum(len(r["spans"]) for r in body["results"]) > 0  # the random tagger does tag something
    rows = extraction_rows(db)
    for text, result in zip(TEXTS, body["results"], strict=True):
        assert_same_spans(result["spans"], expected[text], text)
        for span in result["spans"]:
            assert text[span["start"] : span["end"]] == span["text"]
        row = rows[result["extraction_id"]]
        assert json.loads(row["spans"]) == result["spans"]  # exactly what the client received
        assert row["text_sha256"] == hashlib.sha256(text.encode()).hexdigest() and row["text"] == text
        assert (row["request_id"], row["model_digest"], row["dtype"]) == (body["request_id"], weights, "fp32")
        assert bool(row["truncated"]) == result["truncated"]
    assert any(r["truncated"] for r in body["results"])  # TEXTS holds texts longer than MAX_LENGTH


def test_concurrent_extract_requests_each_keep_their_order(server, expected):
    url, _ = server
    requests = [TEXTS[i::4] for i in range(4)]

    async def main():
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(
                *(client.post(f"{url}/v1/extract", json={"texts": t}) for t in requests)
            )

    for texts, response in zip(requests, asyncio.run(main()), strict=True):
        for text, result in zip(texts, response.json()["results"], strict=True):
            assert_same_spans(result["spans"], expected[text], text)


def test_routes_refuse_the_other_task_and_bad_requests_name_the_problem(server, tmp_path):
    url, _ = server
    wrong = post(url, "/v1/classify", {"texts": ["Rash."]})
    assert wrong.status_code == 404 and "span tagger; use /v1/extract" in wrong.json()["error"]["message"]
    blank = post(url, "/v1/extract", {"texts": ["Rash.", "  "]})
    assert blank.status_code == 422 and "texts[1] is empty" in blank.json()["error"]["message"]
    info = httpx.get(f"{url}/v1/info", timeout=10).json()["model"]
    assert info["task"] == "extract" and info["label_names"] == TAGS and info["threshold"] is None

    classifier = build_classifier(tmp_path / "classifier")
    db = tmp_path / "audit.sqlite"
    app = create_app(load_engine(classifier, "fp32", "cpu"), ServeSettings(audit_db=db), SQLiteAuditStore(db))
    with running(app) as other:
        refused = post(other, "/v1/extract", {"texts": ["Rash."]})
    assert refused.status_code == 404 and "use /v1/classify" in refused.json()["error"]["message"]


def test_verify_and_export_cover_extractions_and_name_a_tampered_row(server, tmp_path, capsys):
    url, db = server
    body = post(url, "/v1/extract", {"texts": TEXTS[:3]}).json()
    capsys.readouterr()
    assert run_cli("audit", "verify", db) == 0
    assert "extractions, every hash chain intact" in capsys.readouterr().out
    out = tmp_path / "extractions.jsonl"
    assert run_cli("audit", "export", db, "--out", out, "--table", "extractions") == 0
    exported = {r["extraction_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    for result in body["results"]:
        assert json.loads(exported[result["extraction_id"]]["spans"]) == result["spans"]

    copy_path = tmp_path / "tampered.sqlite"
    with sqlite3.connect(db) as source, sqlite3.connect(copy_path) as target:
        source.backup(target)
        target.execute("DROP TRIGGER extractions_no_update")
        target.execute("UPDATE extractions SET spans = '[]' WHERE seq = 1")
    assert "extractions row seq=1" in cli_error(capsys, "audit", "verify", copy_path)


def test_a_schema_1_trail_keeps_its_rows_and_gains_the_extractions_table(tmp_path, capsys):
    db = tmp_path / "old.sqlite"
    store = SQLiteAuditStore(db)
    store.close()
    with sqlite3.connect(db) as connection:  # what modernenc 0.x with schema 1 wrote: no extractions
        connection.execute("DROP TABLE extractions")
        connection.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    assert run_cli("audit", "verify", db) == 0  # read-only: verifies what is there, changes nothing
    assert "0 extractions" in capsys.readouterr().out
    SQLiteAuditStore(db).close()  # a server opening it adds the table
    with sqlite3.connect(db) as connection:
        tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    assert "extractions" in tables and version == "2"
