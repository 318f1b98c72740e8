"""`modernenc serve` as a user runs it: refusals before the port is bound, the start-up line, a drain on
SIGTERM, and an intact audit trail after SIGKILL under load."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch
from conftest import cli_error, run_cli
from serve_helpers import TAGS, TEXTS, TOKENIZER_DIR, build_classifier, build_tagger, wait_ready

from modernenc.model import ModernEncoderConfig, ModernEncoderForMaskedLM, ModernEncoderForTokenClassification
from modernenc.serve.audit import DecisionRecord, SQLiteAuditStore, utc_now

REPO = Path(__file__).resolve().parents[1]
KEY = "ops-key-5f3c9a7e1d"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_classifier(tmp_path_factory.mktemp("serve-model"))


class ServerProcess:
    """`python -m modernenc serve MODEL ARGS --port 0` in a subprocess; stderr collected line by line."""

    def __init__(self, model_dir: Path, *args) -> None:
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])
        )
        argv = [sys.executable, "-m", "modernenc", "serve", str(model_dir), "--port", "0", *map(str, args)]
        self.process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.startup_line = self._wait_for(r"modernenc serve: http://", timeout=120)
        self.url = re.search(r"(http://\S+)", self.startup_line).group(1)

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)

    def _wait_for(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if re.search(pattern, line):
                    return line
            if self.process.poll() is not None:
                self._reader.join(timeout=5)
                pytest.fail(f"the server exited with {self.process.returncode}:\n{''.join(self.lines)}")
            time.sleep(0.05)
        pytest.fail(f"no line matching {pattern!r} within {timeout} s:\n{''.join(self.lines)}")

    @property
    def stderr(self) -> str:
        self._reader.join(timeout=10)
        return "".join(self.lines)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def queued(url: str, headers: dict) -> float:
    text = httpx.get(f"{url}/metrics", headers=headers, timeout=10).text
    return float(re.search(r"^modernenc_queue_texts (\S+)$", text, flags=re.M).group(1))


def decision_ids(db: Path) -> set[str]:
    with sqlite3.connect(db) as connection:
        return {row[0] for row in connection.execute("SELECT decision_id FROM decisions")}


def test_sigterm_drains_queued_requests_commits_them_and_exits_0(model_dir, tmp_path, capsys):
    db, keys = tmp_path / "audit.sqlite", tmp_path / "keys.txt"
    keys.write_text(f"ops:{KEY}\n")
    headers = {"Authorization": f"Bearer {KEY}"}
    # Batches always wait up to 5 s for company: the requests below are still queued when SIGTERM comes.
    server = ServerProcess(
        model_dir, "--audit-db", db, "--api-keys", keys, "--max-wait-ms", 5000, "--batch-wait", "always"
    )
    try:
        line = server.startup_line
        digest = re.search(r"sha256:([0-9a-f]{64})", line).group(1)
        assert f"{server.url} model sha256:{digest} dtype fp32 threshold 0.3 (target_recall)" in line
        assert str(db.resolve()) in line
        wait_ready(server.url)
        answers: list[httpx.Response] = []

        def send(texts):
            answers.append(
                httpx.post(f"{server.url}/v1/classify", json={"texts": texts}, headers=headers, timeout=60)
            )

        requests = [TEXTS[i : i + 3] for i in range(0, 18, 3)]
        senders = [threading.Thread(target=send, args=(texts,)) for texts in requests]
        start = time.monotonic()
        for sender in senders:
            sender.start()
        while queued(server.url, headers) < 18:
            assert time.monotonic() - start < 4, "the requests did not reach the queue"
            time.sleep(0.02)
        server.process.send_signal(signal.SIGTERM)
        for sender in senders:
            sender.join(timeout=60)
        assert server.process.wait(timeout=60) == 0, server.stderr
        assert time.monotonic() - start < 5  # the drain ran the batch at once, without waiting for company
    finally:
        server.stop()
    assert [a.status_code for a in answers] == [200] * len(requests)
    answered = {r["decision_id"] for a in answers for r in a.json()["results"]}
    assert len(answered) == 18 and decision_ids(db) == answered
    assert run_cli("audit", "verify", db) == 0
    assert KEY not in server.stderr and KEY not in capsys.readouterr().out


def test_after_sigkill_under_load_every_answered_decision_is_in_an_intact_trail(model_dir, tmp_path):
    db = tmp_path / "audit.sqlite"
    server = ServerProcess(model_dir, "--audit-db", db, "--max-wait-ms", 2)
    answered: set[str] = set()
    stop = threading.Event()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=server.url, timeout=30) as http:
            while not stop.is_set():
                texts = rng.sample(TEXTS, rng.randint(1, 8))
                try:
                    response = http.post("/v1/classify", json={"texts": texts})
                except httpx.TransportError:
                    return  # the server is gone
                if response.status_code == 200:
                    answered.update(r["decision_id"] for r in response.json()["results"])

    try:
        wait_ready(server.url)
        clients = [threading.Thread(target=client, args=(seed,)) for seed in range(4)]
        for thread in clients:
            thread.start()
        deadline = time.monotonic() + 30
        while len(answered) < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.process.kill()  # SIGKILL, mid-load
        server.process.wait()
        stop.set()
        for thread in clients:
            thread.join(timeout=30)
    finally:
        stop.set()
        server.stop()
    assert len(answered) >= 200
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert answered <= decision_ids(db)  # nothing a client received is missing
    assert run_cli("audit", "verify", db) == 0
    # A restart opens the same trail and extends its chain.
    store = SQLiteAuditStore(db)
    store.append_decisions(
        [
            DecisionRecord(
                "after-restart",
                "r",
                utc_now(),
                None,
                "0" * 64,
                None,
                "d",
                "fp32",
                "t",
                0.5,
                0.25,
                0.75,
                0.9,
                "ade",
                False,
                False,
            )
        ]
    )
    store.close()
    assert run_cli("audit", "verify", db) == 0


# ---------------------------------------------------------------------------------------------------------
# refusals, before the port is bound


def _tiny_config(**overrides):
    sizes = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2)
    return ModernEncoderConfig(**sizes, max_position_embeddings=64, **overrides)


@pytest.fixture(scope="module")
def other_folders(tmp_path_factory, model_dir):
    root = tmp_path_factory.mktemp("other")
    torch.manual_seed(0)
    ModernEncoderForMaskedLM(_tiny_config()).save_pretrained(root / "mlm", tokenizer_path=TOKENIZER_DIR)
    ModernEncoderForTokenClassification(_tiny_config(num_labels=3)).save_pretrained(
        root / "tokens", tokenizer_path=TOKENIZER_DIR
    )
    replaced = root / "replaced"
    replaced.mkdir()
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "thresholds.json",
    ):
        if (model_dir / name).exists():
            (replaced / name).write_bytes((model_dir / name).read_bytes())
    rule = json.loads((replaced / "thresholds.json").read_text())
    rule["weights_sha256"] = "0" * 64  # chosen for other weights
    (replaced / "thresholds.json").write_text(json.dumps(rule))
    (root / "keys-twice.txt").write_text(f"a:{KEY}\nb:{KEY}\n")
    (root / "keys-latin1.txt").write_bytes(f"caf\xe9:{KEY}\n".encode("latin-1"))
    (root / "notes.sqlite").write_text("not a database\n" * 10)
    return root


@pytest.mark.parametrize(
    "folder,extra,message",
    [
        ("missing", [], r"model folder \S+missing does not exist"),
        ("mlm", [], r"holds ModernBertForMaskedLM, not a fine-tuned ModernBertForSequenceClassification"),
        ("tokens", [], r"tags tokens with \['LABEL_0', 'LABEL_1', 'LABEL_2'\], not BIO tags"),
        ("replaced", [], r"thresholds.json was chosen for other weights"),
        (
            "model",
            ["--dtype", "int8"],
            r"records thresholds for fp32 only, not for int8: .* Run .modernenc calibrate \S+ --dtype int8",
        ),
        ("model", ["--max-batch-tokens", "16"], r"--max-batch-tokens 16 is below the model's max_length 40"),
        ("model", ["--max-texts-per-request", "9", "--max-queue-texts", "8"], r"could never be queued"),
        ("model", ["--max-wait-ms", "-1"], r"--max-wait-ms must be a finite number >= 0; got -1"),
        # nan killed the batcher and every request hung; inf held a lone request forever
        ("model", ["--max-wait-ms", "nan"], r"--max-wait-ms must be a finite number >= 0; got nan"),
        ("model", ["--max-wait-ms", "inf"], r"--max-wait-ms must be a finite number >= 0; got inf"),
        ("model", ["--keep-alive-s", "0"], r"--keep-alive-s must be at least 1; got 0"),
        ("model", ["--api-keys", "{root}/absent.txt"], r"--api-keys file \S+ does not exist"),
        ("model", ["--api-keys", "{root}/keys-twice.txt"], r"line 2: the same key as line 1"),
        (
            "model",
            ["--api-keys", "{root}/keys-latin1.txt"],
            r"--api-keys file \S+ is not UTF-8 text \(at byte offset 3\)$",
        ),
        ("model", ["--api-keys", "{root}"], r"--api-keys \S+ is a folder; give the keys file"),
        ("model", ["--audit-db", "{root}/notes.sqlite"], r"notes.sqlite is not an SQLite database"),
        ("model", ["--audit-db", "{root}"], r"is a folder"),
        ("model", ["--audit-db", "{root}/no/such/folder/a.sqlite"], r"folder \S+ does not exist"),
    ],
)
def test_a_server_that_cannot_serve_says_why_in_one_sentence(
    folder, extra, message, model_dir, other_folders, capsys
):
    path = model_dir if folder == "model" else other_folders / folder
    args = [a.format(root=other_folders) for a in extra]
    error = cli_error(capsys, "serve", path, "--port", "0", "--device", "cpu", *args)
    assert re.search(rf"^modernenc serve: error: .*{message}", error), error
    assert KEY not in error


def test_a_damaged_audit_trail_is_refused_before_anything_is_written_to_it(model_dir, tmp_path, capsys):
    """A trail SQLite finds damaged is refused at start-up, not extended (where the damage could spread and
    every answered decision would land in a trail that no longer verifies), and its bytes stay as they are."""
    db = tmp_path / "audit.sqlite"
    store = SQLiteAuditStore(db)
    record = DecisionRecord(
        "", "r", utc_now(), None, "0" * 64, None, "d", "fp32", "t", 0.5, 0.25, 0.75, 0.9, "ade", False, False
    )
    store.append_decisions([dataclasses.replace(record, decision_id=f"d{i}") for i in range(2000)])
    store.close()  # checkpoints the WAL into the file
    page_size = sqlite3.connect(db).execute("PRAGMA page_size").fetchone()[0]
    pages = db.stat().st_size // page_size
    assert pages > 20
    with db.open("r+b") as f:  # a middle page's type byte (no free pages: the trail never deletes)
        f.seek(pages // 2 * page_size)
        f.write(b"\x00")
    damaged = db.read_bytes()
    error = cli_error(capsys, "serve", model_dir, "--port", "0", "--device", "cpu", "--audit-db", db)
    assert re.search(
        rf"^modernenc serve: error: --audit-db {re.escape(str(db))} is damaged \(SQLite's", error
    )
    assert "nothing was written to it: restore it from a backup or choose another --audit-db" in error
    assert db.read_bytes() == damaged
    assert "fails SQLite's integrity check" in cli_error(capsys, "audit", "verify", db)
    assert f"audit database {tmp_path} is a folder" in cli_error(capsys, "audit", "verify", tmp_path)
    assert f"audit database {db}x does not exist" in cli_error(capsys, "audit", "verify", f"{db}x")


def test_an_idle_keep_alive_connection_is_closed_after_keep_alive_s_not_before(model_dir, tmp_path):
    """The server must not close a connection a client may still reuse: it keeps idle ones for
    --keep-alive-s (75 s by default, above common clients' idle expiry), then closes them."""
    server = ServerProcess(model_dir, "--keep-alive-s", 2, "--audit-db", tmp_path / "a.sqlite")
    try:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        request = f"GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            for pause in (0.0, 1.0):  # reused after an idle second: still open
                time.sleep(pause)
                conn.sendall(request)
                response = b""
                while not response.endswith(b'{"status":"ok"}'):  # head and body may come apart
                    response += conn.recv(4096)
                assert response.startswith(b"HTTP/1.1 200")
            start = time.monotonic()
            assert conn.recv(4096) == b""  # then idle: the server closes it (EOF) after 2 s
            assert 1.5 < time.monotonic() - start < 5
    finally:
        server.stop()


def test_a_port_in_use_is_named(model_dir, tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        error = cli_error(capsys, "serve", model_dir, "--port", port, "--audit-db", tmp_path / "a.sqlite")
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in error


def test_a_span_tagger_is_served_on_extract_and_says_so_at_start_up(tmp_path):
    tagger = build_tagger(tmp_path / "tagger")
    server = ServerProcess(tagger, "--device", "cpu", "--audit-db", tmp_path / "audit.sqlite")
    try:
        assert f"span tagger ({', '.join(TAGS)}) on /v1/extract" in server.startup_line
        wait_ready(server.url)
        response = httpx.post(f"{server.url}/v1/extract", json={"texts": TEXTS[:3]}, timeout=30)
        assert response.status_code == 200, response.text
        assert len(response.json()["results"]) == 3
    finally:
        server.stop()
    with sqlite3.connect(tmp_path / "audit.sqlite") as connection:
        assert connection.execute("SELECT count(*) FROM extractions").fetchone()[0] == 3
