"""`modernenc serve` in-process: a real uvicorn server on a loopback port, a real HTTP client (httpx).

Decisions are checked against `modernenc predict` on the same folder, truncation against transformers'
tokenizer, digests against hashlib, the audit trail against the SQLite file read with sqlite3, metrics
with prometheus_client's own parser.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import sqlite3
import threading
import time
from datetime import datetime

import httpx
import pytest
from conftest import cli_error, run_cli
from prometheus_client.parser import text_string_to_metric_families
from serve_helpers import BAND, MAX_LENGTH, TEXTS, THRESHOLD, build_classifier, running
from transformers import AutoTokenizer

from modernenc.serve.app import create_app
from modernenc.serve.audit import SQLiteAuditStore
from modernenc.serve.auth import read_api_keys
from modernenc.serve.engine import load_engine
from modernenc.serve.settings import ServeSettings
from modernenc.tasks.predict import predict_file

ALICE = "alice-secret-key-0123456789"
BARE = "bare-key-without-a-name-42"
KEYS = f"# who may call\nalice:{ALICE}\n\n{BARE}\n"
AUTH = {"Authorization": f"Bearer {ALICE}"}
LIMITS = dict(max_request_bytes=20_000, max_texts_per_request=40, max_queue_texts=400)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_classifier(tmp_path_factory.mktemp("serve-model"))


@pytest.fixture(scope="module")
def engine(model_dir):
    return load_engine(model_dir, "fp32", "cpu")


@pytest.fixture(scope="module")
def expected(model_dir, tmp_path_factory):
    """`modernenc predict` on TEXTS: text -> its output row (probability, label, needs_review)."""
    folder = tmp_path_factory.mktemp("predict")
    src = folder / "in.jsonl"
    src.write_text(
        "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in TEXTS), encoding="utf-8"
    )
    predict_file(model_dir, src, folder / "out.jsonl", progress=False)
    rows = [json.loads(line) for line in (folder / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    return {row["text"]: row for row in rows}


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "keys.txt"
    path.write_text(KEYS)
    return path


@pytest.fixture(scope="module")
def server(engine, keys_file, tmp_path_factory):
    """(url, audit db path) of a server with keys; batches wait 50 ms for company."""
    db = tmp_path_factory.mktemp("audit") / "audit.sqlite"
    settings = ServeSettings(audit_db=db, max_wait_ms=50, **LIMITS)
    app = create_app(engine, settings, SQLiteAuditStore(db), read_api_keys(keys_file))
    with running(app) as url:
        yield url, db


def post(url, path, body, headers=AUTH, timeout=30):
    return httpx.post(f"{url}{path}", json=body, headers=headers, timeout=timeout)


def scrape(url, headers=AUTH):
    """/metrics, read by prometheus_client's own parser: (name, labels) -> value (0 when absent)."""
    text = httpx.get(f"{url}/metrics", headers=headers, timeout=10).text
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]

    def value(name, labels=None):
        for sample in samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                return sample.value
        return 0.0

    return value


def metric(url, name, labels=None):
    return scrape(url)(name, labels)


def audit_rows(db, table="decisions"):
    with sqlite3.connect(db) as connection:
        connection.row_factory = sqlite3.Row
        key = "decision_id" if table == "decisions" else "review_id"
        return {row[key]: dict(row) for row in connection.execute(f"SELECT * FROM {table} ORDER BY seq")}


def assert_matches_predict(results, texts, expected):
    for text, result in zip(texts, results, strict=True):
        want = expected[text]
        assert result["probability"] == pytest.approx(want["probability"], abs=1e-5), text
        if min(abs(want["probability"] - b) for b in (THRESHOLD, *BAND)) > 1e-4:  # not on a boundary
            assert (result["label"], result["needs_review"]) == (want["label"], want["needs_review"]), text


# ---------------------------------------------------------------------------------------------------------
# decisions


def test_classify_matches_predict_in_input_order(server, model_dir, expected):
    url, _ = server
    texts = list(reversed(TEXTS))  # not predict's order, not length order
    response = post(url, "/v1/classify", {"texts": texts})
    assert response.status_code == 200, response.text
    body = response.json()
    assert_matches_predict(body["results"], texts, expected)
    weights = hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()
    assert body["model"] == {
        "digest": weights,
        "dtype": "fp32",
        "threshold_name": "target_recall",
        "threshold": THRESHOLD,
        "review_band": list(BAND),
    }
    assert response.headers["x-request-id"] == body["request_id"]
    # Truncation, from transformers' own tokenizer: a text is cut iff it has more than MAX_LENGTH tokens.
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    longer = [len(tokenizer(t)["input_ids"]) > MAX_LENGTH for t in texts]
    assert any(longer) and not all(longer)
    assert [r["truncated"] for r in body["results"]] == longer
    assert len({r["decision_id"] for r in body["results"]}) == len(texts)


def test_concurrent_requests_share_batches_and_each_keeps_its_order(server, expected):
    url, _ = server
    batches_before = metric(url, "modernenc_batch_texts_count")
    requests = [TEXTS[i : i + 1 + i % 5] for i in range(16)]  # 1 to 5 texts, overlapping

    async def send_all():
        async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as client:
            return await asyncio.gather(*(client.post("/v1/classify", json={"texts": t}) for t in requests))

    responses = asyncio.run(send_all())
    for texts, response in zip(requests, responses, strict=True):
        assert response.status_code == 200, response.text
        assert_matches_predict(response.json()["results"], texts, expected)
    batches = metric(url, "modernenc_batch_texts_count") - batches_before
    assert 1 <= batches < len(requests)  # texts of several requests went through the model together


def test_a_request_threshold_moves_the_band_as_predict_does(server, expected):
    url, db = server
    texts = TEXTS[:12]
    body = post(url, "/v1/classify", {"texts": texts, "threshold": 0.7}).json()
    assert body["model"]["threshold_name"] == "request"
    assert body["model"]["review_band"] == [0.35, 0.85]  # halfway to 0 and to 1
    for text, result in zip(texts, body["results"], strict=True):
        p = expected[text]["probability"]
        assert result["label"] == ("ade" if p >= 0.7 else "no_ade")
        assert result["needs_review"] == (0.35 <= p <= 0.85)
    row = audit_rows(db)[body["results"][0]["decision_id"]]
    assert (row["threshold_name"], row["threshold"], row["review_lo"], row["review_hi"]) == (
        "request",
        0.7,
        0.35,
        0.85,
    )
    # The file's own threshold, given explicitly, keeps the file's name and band.
    same = post(url, "/v1/classify", {"texts": texts[:1], "threshold": THRESHOLD}).json()["model"]
    assert (same["threshold_name"], same["review_band"]) == ("target_recall", list(BAND))


def test_ready_waits_for_the_warm_up_batch_and_a_failed_warm_up_stays_unready(engine, tmp_path):
    for outcome in ("succeeds", "fails"):
        release = threading.Event()
        slow = copy.copy(engine)

        def warm_up(outcome=outcome, release=release):
            release.wait(30)
            if outcome == "fails":
                raise RuntimeError("no memory for the first batch")
            engine.warm_up()

        slow.warm_up = warm_up
        db = tmp_path / f"{outcome}.sqlite"
        with running(create_app(slow, ServeSettings(audit_db=db), SQLiteAuditStore(db)), ready=False) as url:
            assert httpx.get(f"{url}/health").status_code == 200  # alive while warming up
            waiting = httpx.get(f"{url}/ready")
            assert waiting.status_code == 503 and "warming up" in waiting.json()["error"]["message"]
            release.set()
            deadline = time.monotonic() + 30
            while (ready := httpx.get(f"{url}/ready")).status_code == 503 and outcome == "succeeds":
                assert time.monotonic() < deadline
                time.sleep(0.02)
            if outcome == "succeeds":
                assert ready.json() == {"status": "ready"}
            else:
                while "warm-up batch failed" not in ready.text and time.monotonic() < deadline:
                    ready = httpx.get(f"{url}/ready")
                assert ready.status_code == 503 and "no memory for the first batch" in ready.text
                refused = httpx.post(f"{url}/v1/classify", json={"texts": ["Rash."]})
                assert refused.status_code == 503


def test_a_dead_batcher_fails_its_requests_turns_unready_and_refuses_new_ones(engine, tmp_path, monkeypatch):
    from modernenc.serve.batching import BatchScheduler

    async def broken(self, loop):  # a bug outside the per-batch error handling: the batcher task dies
        raise ValueError("cannot convert float NaN to integer")

    monkeypatch.setattr(BatchScheduler, "_wait_for_company", broken)
    db = tmp_path / "audit.sqlite"
    with running(create_app(engine, ServeSettings(audit_db=db), SQLiteAuditStore(db))) as url:
        failed = httpx.post(f"{url}/v1/classify", json={"texts": ["Rash."]}, timeout=30)
        assert failed.status_code == 500, failed.text
        message = failed.json()["error"]["message"]
        assert "modernenc-batcher task died" in message and "NaN" in message
        assert "nothing was recorded" in message
        ready = httpx.get(f"{url}/ready")
        assert ready.status_code == 503 and "modernenc-batcher task died" in ready.text
        assert httpx.post(f"{url}/v1/classify", json={"texts": ["Rash."]}, timeout=30).status_code == 503
    assert audit_rows(db) == {}


def test_non_finite_probabilities_fail_the_batch_rather_than_read_as_no_event(engine):
    import dataclasses

    import torch

    broken = copy.deepcopy(engine._model)
    with torch.no_grad():
        broken.classifier.weight.fill_(float("nan"))
    ids, _ = engine.tokenize(TEXTS[:3])
    with pytest.raises(FloatingPointError, match="3 non-finite probabilities"):
        dataclasses.replace(engine, _model=broken).score(ids)


# ---------------------------------------------------------------------------------------------------------
# authentication


def test_keys_are_required_checked_and_recorded_by_name_only(server, caplog):
    url, db = server
    text = {"texts": ["Rash."]}
    missing = post(url, "/v1/classify", text, headers={})
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    assert missing.json()["error"]["type"] == "unauthorized"
    assert post(url, "/v1/classify", text, headers={"Authorization": f"Bearer {ALICE}x"}).status_code == 401
    assert post(url, "/v1/classify", text, headers={"Authorization": f"Basic {ALICE}"}).status_code == 401
    for path in ("/metrics", "/v1/info", "/v1/review"):
        assert httpx.get(f"{url}{path}").status_code == 401, path
        assert httpx.get(f"{url}{path}", headers=AUTH).status_code == 200, path
    for path in ("/health", "/ready"):  # probes stay open
        assert httpx.get(f"{url}{path}").status_code == 200
    named = post(url, "/v1/classify", text).json()["results"][0]["decision_id"]
    bare = post(url, "/v1/classify", text, headers={"Authorization": f"Bearer {BARE}"})
    rows = audit_rows(db)
    assert rows[named]["key_name"] == "alice"
    assert rows[bare.json()["results"][0]["decision_id"]]["key_name"] == "key-4"  # a bare key on line 4
    with sqlite3.connect(db) as connection:
        dump = "\n".join(connection.iterdump())
    for secret in (ALICE, BARE):
        assert secret not in caplog.text and secret not in dump


# ---------------------------------------------------------------------------------------------------------
# limits and bad input


@pytest.mark.parametrize(
    "body,status,message",
    [
        (b"not json", 422, "the body is not valid JSON"),
        (b"", 422, "Input should be an object"),
        (b"[]", 422, "Input should be an object"),
        (b"{}", 422, "texts: Field required"),
        (b'{"texts": "Rash."}', 422, "texts: Input should be a valid array"),
        (b'{"texts": ["Rash.", 3]}', 422, "texts[1]: Input should be a valid string"),
        (b'{"texts": []}', 422, "texts is empty"),
        (b'{"texts": ["Rash.", "ok", " \\n\\t"]}', 422, "texts[2] is empty or only whitespace"),
        (
            b'{"texts": ["Rash."], "threshold": 1.5}',
            422,
            "threshold: Input should be less than or equal to 1",
        ),
        (
            b'{"texts": ["Rash."], "threshold": -0.1}',
            422,
            "threshold: Input should be greater than or equal to 0",
        ),
        (b'{"texts": ["Rash."], "threshold": "0.5"}', 422, "threshold: Input should be a valid number"),
        (b'{"texts": ["Rash."], "threshold": true}', 422, "threshold: Input should be a valid number"),
        (b'{"texts": ["Rash."], "treshold": 0.2}', 422, "treshold: Extra inputs are not permitted"),
        (
            json.dumps({"texts": ["a"] * 41}).encode(),
            413,
            "41 texts in one request; this server takes at most 40",
        ),
        (json.dumps({"texts": ["x" * 30_000]}).encode(), 413, "this server takes at most 20000"),
    ],
)
def test_each_bad_request_gets_a_json_error_naming_the_problem(server, body, status, message):
    url, _ = server
    response = httpx.post(f"{url}/v1/classify", content=body, headers=AUTH, timeout=30)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error["message"]
    assert error["type"] == {413: "request_too_large", 422: "invalid_request"}[status]


def test_a_streamed_body_without_length_is_cut_off_at_the_limit(server):
    url, _ = server
    sent = []

    def chunks():  # chunked transfer: no Content-Length to refuse it by
        for _ in range(100):
            sent.append(1)
            yield b" " * 1000

    response = httpx.post(f"{url}/v1/classify", content=chunks(), headers=AUTH, timeout=30)
    assert response.status_code == 413
    assert "over 20000 bytes" in response.json()["error"]["message"]


def test_unknown_routes_methods_and_query_values_are_json_errors(server):
    url, _ = server
    cases = [
        (httpx.get(f"{url}/v2/classify", headers=AUTH), 404, "no route /v2/classify"),
        (httpx.get(f"{url}/v1/classify", headers=AUTH), 405, "GET is not allowed"),
        (httpx.get(f"{url}/v1/review?limit=0", headers=AUTH), 422, "limit: Input should be greater than"),
        (httpx.get(f"{url}/v1/review?status=done", headers=AUTH), 422, "status: Input should be 'pending'"),
        (post(url, "/v1/extract", {"texts": ["Rash."]}), 404, "/v1/extract needs a span tagger"),
    ]
    for response, status, message in cases:
        assert response.status_code == status, response.text
        assert message in response.json()["error"]["message"]


def test_a_full_queue_answers_429_and_a_client_that_leaves_is_dropped(engine, tmp_path):
    """A tiny queue (4 texts) whose batches always wait up to 2 s for company, so its state is known."""
    db = tmp_path / "audit.sqlite"
    settings = ServeSettings(
        audit_db=db, max_wait_ms=2000, batch_wait="always", max_queue_texts=4, max_texts_per_request=4
    )
    with running(create_app(engine, settings, SQLiteAuditStore(db))) as url:
        first = {}
        waiting = threading.Thread(
            target=lambda: first.update(r=post(url, "/v1/classify", {"texts": TEXTS[:3]}))
        )
        waiting.start()
        deadline = time.monotonic() + 10
        while metric(url, "modernenc_queue_texts") != 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        full = post(url, "/v1/classify", {"texts": TEXTS[3:5]})
        assert full.status_code == 429, full.text
        assert int(full.headers["retry-after"]) >= 1
        assert "queue is full" in full.json()["error"]["message"]
        # One text fits; its client gives up after 0.3 s, long before the batch runs.
        with pytest.raises(httpx.ReadTimeout):
            post(url, "/v1/classify", {"texts": TEXTS[5:6]}, timeout=0.3)
        while metric(url, "modernenc_cancelled_texts_total") != 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert metric(url, "modernenc_queue_texts") == 3
        waiting.join(timeout=30)
        assert first["r"].status_code == 200
        assert sorted(audit_rows(db)) == sorted(r["decision_id"] for r in first["r"].json()["results"])
        assert metric(url, "modernenc_requests_total", {"route": "/v1/classify", "status": "429"}) == 1


def test_a_failed_batch_is_a_500_and_a_failed_commit_a_503_with_nothing_returned(engine, tmp_path):
    db = tmp_path / "audit.sqlite"
    flaky = copy.copy(engine)
    failures = {"score": 1, "commit": 1}

    def score(ids):
        if len(ids) == 3 and failures["score"]:  # the warm-up batch has 4 texts
            failures["score"] -= 1
            raise RuntimeError("out of memory")
        return engine.score(ids)

    class FlakyStore(SQLiteAuditStore):
        def append_decisions(self, records):
            if failures["commit"]:
                failures["commit"] -= 1
                raise sqlite3.OperationalError("disk I/O error")
            super().append_decisions(records)

    flaky.score = score
    with running(create_app(flaky, ServeSettings(audit_db=db, max_wait_ms=0), FlakyStore(db))) as url:
        failed = post(url, "/v1/classify", {"texts": TEXTS[:3]})
        assert failed.status_code == 500 and "inference failed: RuntimeError: out of memory" in failed.text
        lost = post(url, "/v1/classify", {"texts": TEXTS[:2]})
        assert lost.status_code == 503 and "audit trail could not record" in lost.text
        assert "results" not in lost.json()
        assert audit_rows(db) == {}
        ok = post(url, "/v1/classify", {"texts": TEXTS[:3]})
        assert ok.status_code == 200
        assert sorted(audit_rows(db)) == sorted(r["decision_id"] for r in ok.json()["results"])


# ---------------------------------------------------------------------------------------------------------
# audit trail


def test_every_decision_is_an_audit_row_with_its_provenance(server, model_dir):
    url, db = server
    texts = TEXTS[:6]
    body = post(url, "/v1/classify", {"texts": texts}).json()
    rows = audit_rows(db)
    weights = hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()
    for text, result in zip(texts, body["results"], strict=True):
        row = rows[result["decision_id"]]
        assert row["request_id"] == body["request_id"]
        assert row["text_sha256"] == hashlib.sha256(text.encode()).hexdigest()
        assert row["text"] is None  # only with --audit-store-text
        assert (row["model_digest"], row["dtype"]) == (weights, "fp32")
        assert (row["threshold_name"], row["threshold"]) == ("target_recall", THRESHOLD)
        assert (row["review_lo"], row["review_hi"]) == BAND
        assert row["probability"] == result["probability"]
        assert (row["label"], bool(row["needs_review"]), bool(row["truncated"])) == (
            result["label"],
            result["needs_review"],
            result["truncated"],
        )
        assert row["created_at"].endswith("Z")
        assert abs(datetime.fromisoformat(row["created_at"][:-1] + "+00:00").timestamp() - time.time()) < 60


def test_audit_verify_passes_and_names_the_first_tampered_row(server, tmp_path, capsys):
    url, db = server
    post(url, "/v1/classify", {"texts": TEXTS[:5]})
    capsys.readouterr()
    assert run_cli("audit", "verify", db) == 0
    assert ": ok: integrity check passed" in capsys.readouterr().out

    def tampered(name, *statements):
        copy_path = tmp_path / f"{name}.sqlite"
        with sqlite3.connect(db) as source, sqlite3.connect(copy_path) as target:
            source.backup(target)  # a consistent copy of the live database
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                target.execute("UPDATE decisions SET label = 'x' WHERE seq = 1")
            target.execute("DROP TRIGGER decisions_no_update")
            target.execute("DROP TRIGGER decisions_no_delete")
            for statement in statements:
                target.execute(statement)
        return copy_path

    third = audit_rows(db)
    third_id = list(third)[2]
    altered = tampered("altered", "UPDATE decisions SET probability = 0.01 WHERE seq = 3")
    error = cli_error(capsys, "audit", "verify", altered)
    assert f"decisions row seq=3 (decision_id={third_id}) was altered" in error
    deleted = tampered("deleted", "DELETE FROM decisions WHERE seq = 2")
    assert "decisions rows seq=2 are missing" in cli_error(capsys, "audit", "verify", deleted)
    rehashed = tampered("relinked", "UPDATE decisions SET prev_hash = row_hash WHERE seq = 4")
    assert "decisions row seq=4" in cli_error(capsys, "audit", "verify", rehashed)


def test_review_flow_appends_reviews_and_export_shows_the_latest(server, tmp_path, capsys):
    url, db = server
    body = post(url, "/v1/classify", {"texts": TEXTS}).json()
    flagged = [r["decision_id"] for r in body["results"] if r["needs_review"]]
    clear = [r["decision_id"] for r in body["results"] if not r["needs_review"]]
    assert flagged and clear
    pending = httpx.get(f"{url}/v1/review?status=pending&limit=1000", headers=AUTH).json()["decisions"]
    pending_ids = [d["decision_id"] for d in pending]
    assert set(flagged) <= set(pending_ids) and not set(clear) & set(pending_ids)
    assert [d["created_at"] for d in pending] == sorted(d["created_at"] for d in pending)  # oldest first
    assert len(httpx.get(f"{url}/v1/review?limit=1", headers=AUTH).json()["decisions"]) == 1

    target = flagged[0]
    first = post(url, f"/v1/review/{target}", {"reviewer": "dr.a", "verdict": "event", "note": "rash"})
    assert first.status_code == 201, first.text
    assert first.json()["key_name"] == "alice" and first.json()["decision_id"] == target
    pending_ids = [
        d["decision_id"] for d in httpx.get(f"{url}/v1/review?limit=1000", headers=AUTH).json()["decisions"]
    ]
    assert target not in pending_ids and set(flagged[1:]) <= set(pending_ids)
    second = post(url, f"/v1/review/{target}", {"reviewer": "dr.b", "verdict": "no_event"})
    assert second.status_code == 201
    reviews = [r for r in audit_rows(db, "reviews").values() if r["decision_id"] == target]
    assert [(r["reviewer"], r["verdict"], r["note"]) for r in reviews] == [
        ("dr.a", "event", "rash"),
        ("dr.b", "no_event", None),
    ]

    assert post(url, "/v1/review/no-such-id", {"reviewer": "a", "verdict": "event"}).status_code == 404
    bad = post(url, f"/v1/review/{target}", {"reviewer": "a", "verdict": "maybe"})
    assert (
        bad.status_code == 422
        and "verdict: Input should be 'event' or 'no_event'" in bad.json()["error"]["message"]
    )
    assert post(url, f"/v1/review/{target}", {"verdict": "event"}).status_code == 422
    assert post(url, f"/v1/review/{target}", {"reviewer": "", "verdict": "event"}).status_code == 422
    unnamed = post(url, f"/v1/review/{target}", {"reviewer": " \t\n", "verdict": "event"})
    assert unnamed.status_code == 422 and "reviewer is empty or only whitespace" in unnamed.text
    assert len([r for r in audit_rows(db, "reviews").values() if r["decision_id"] == target]) == 2
    assert (
        post(url, f"/v1/review/{target}", {"reviewer": "a", "verdict": "event"}, headers={}).status_code
        == 401
    )

    out = tmp_path / "decisions.jsonl"
    assert run_cli("audit", "export", db, "--out", out) == 0
    exported = {row["decision_id"]: row for row in map(json.loads, out.read_text().splitlines())}
    assert len(exported) == len(audit_rows(db))
    assert (
        exported[target]["review_verdict"],
        exported[target]["reviewer"],
        exported[target]["reviews"],
    ) == (
        "no_event",
        "dr.b",
        2,
    )
    assert exported[clear[0]]["review_verdict"] is None and exported[clear[0]]["reviews"] == 0
    assert "already exists" in cli_error(capsys, "audit", "export", db, "--out", out)
    assert run_cli("audit", "export", db, "--out", out, "--force") == 0  # its own earlier export
    (tmp_path / "notes.jsonl").write_text("the user's\n")  # --force never replaces another file
    refused = cli_error(capsys, "audit", "export", db, "--out", tmp_path / "notes.jsonl", "--force")
    assert "refusing to replace" in refused and (tmp_path / "notes.jsonl").read_text() == "the user's\n"
    csv_out = tmp_path / "decisions.csv"
    assert run_cli("audit", "export", db, "--out", csv_out, "--since", "2999-01-01") == 0
    assert csv_out.read_text().count("\n") == 1  # the header only: nothing from the future
    assert "not an ISO date" in cli_error(
        capsys, "audit", "export", db, "--out", tmp_path / "x.csv", "--since", "May"
    )
    assert run_cli("audit", "verify", db) == 0


# ---------------------------------------------------------------------------------------------------------
# metrics and docs


def test_metrics_count_requests_texts_and_decisions(server):
    url, _ = server

    def snapshot():
        value = scrape(url)
        return {
            "ok": value("modernenc_requests_total", {"route": "/v1/classify", "status": "200"}),
            "denied": value("modernenc_requests_total", {"route": "/v1/classify", "status": "401"}),
            "texts": value("modernenc_texts_total"),
            "decisions": sum(
                value("modernenc_decisions_total", {"label": label, "needs_review": flag})
                for label in ("ade", "no_ade")
                for flag in ("true", "false")
            ),
            "batches": value("modernenc_inference_seconds_count"),
            "tokens": value("modernenc_tokens_total"),
        }

    before = snapshot()
    post(url, "/v1/classify", {"texts": TEXTS[:7]})
    post(url, "/v1/classify", {"texts": ["Rash."]}, headers={})
    after = snapshot()
    assert after["ok"] - before["ok"] == 1 and after["denied"] - before["denied"] == 1
    assert after["texts"] - before["texts"] == 7 and after["decisions"] - before["decisions"] == 7
    assert after["batches"] > before["batches"] and after["tokens"] - before["tokens"] >= 7 * 3
    assert metric(url, "modernenc_queue_texts") == 0


def test_openapi_documents_every_route(server):
    url, _ = server
    assert "swagger" in httpx.get(f"{url}/docs").text.lower()
    spec = httpx.get(f"{url}/openapi.json").json()
    assert {
        "/v1/classify",
        "/v1/extract",
        "/v1/review",
        "/v1/review/{decision_id}",
        "/v1/info",
        "/health",
    } <= set(spec["paths"])
    request = spec["paths"]["/v1/classify"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(request["properties"]) == {"texts", "threshold"}
    info = httpx.get(f"{url}/v1/info", headers=AUTH).json()
    assert info["limits"]["max_texts_per_request"] == 40 and info["model"]["max_length"] == MAX_LENGTH
    assert info["limits"]["max_batch_tokens"] == 2048  # unset: the CPU's default


def test_batch_token_default_follows_the_device_and_never_cuts_a_text():
    unset = ServeSettings()
    assert unset.for_model("cpu", 512).max_batch_tokens == 2048
    assert unset.for_model("cuda:1", 512).max_batch_tokens == 8192
    assert unset.for_model("cpu", 8192).max_batch_tokens == 8192  # a whole max_length text must fit
    assert ServeSettings(max_batch_tokens=300).for_model("cpu", 512).max_batch_tokens == 300  # then refused:
    with pytest.raises(ValueError, match="--max-batch-tokens 300 is below the model's max_length 512"):
        ServeSettings(max_batch_tokens=300).for_model("cpu", 512).check(max_length=512)
    with pytest.raises(ValueError, match="--batch-wait must be one of adaptive, always; got 'never'"):
        ServeSettings(batch_wait="never").for_model("cpu", 512).check(max_length=512)


def test_int8_serves_the_thresholds_calibrated_for_it_and_scores_as_predict_does(tmp_path):
    from modernenc.serve.engine import ModelRefused
    from modernenc.tasks.calibration import calibrate
    from modernenc.tasks.decisions import read_thresholds

    folder = build_classifier(tmp_path / "clf")
    with pytest.raises(ModelRefused, match=r"records thresholds for fp32 only, not for int8: .*FILE`$"):
        load_engine(folder, "int8", "cpu")  # fp32's threshold does not carry over; serve has no --threshold
    rows = [{"text": t, "label": ["no_ade", "ade"][i % 3 == 0]} for i, t in enumerate(TEXTS)]
    validation = tmp_path / "validation.jsonl"
    validation.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    calibrate(folder, validation, "int8", progress=False)
    engine = load_engine(folder, "int8", "auto")  # auto: the CPU, where int8 runs
    rule = read_thresholds(folder, "int8")
    assert (engine.device, engine.dtype) == ("cpu", "int8")
    assert (engine.default_policy.threshold, engine.default_policy.review_band) == (
        rule.threshold,
        rule.review_band,
    )
    assert rule.threshold != THRESHOLD
    src = tmp_path / "in.jsonl"
    src.write_text(
        "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in TEXTS), encoding="utf-8"
    )
    predict_file(folder, src, tmp_path / "out.jsonl", dtype="int8", progress=False)
    predicted = [
        json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    ids, _ = engine.tokenize(TEXTS)
    scores = engine.score(ids)
    assert max(abs(s - r["probability"]) for s, r in zip(scores, predicted, strict=True)) < 1e-6
    for score, row in zip(scores, predicted, strict=True):
        assert engine.default_policy.decide(float(score), 1, ["no_ade", "ade"]) == (
            row["label"],
            row["needs_review"],
        )
