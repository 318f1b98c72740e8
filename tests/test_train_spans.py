"""A span tagger end to end on real ADE sentences: fine-tune (tiny, short), keep the best by validation entity
F1, extract with `modernenc predict`, and check it all against transformers' own model and pipeline and
against seqeval."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, cli_error, run_cli
from seqeval.metrics import classification_report
from seqeval.scheme import IOB2
from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

from modernenc.pv.ade_data import load_ade_sentences, make_splits
from modernenc.pv.ade_spans import build_span_rows, read_relation_lines, span_splits
from modernenc.tasks.entities import entities_from_tags
from modernenc.tasks.extract import SpanTagger
from modernenc.train.builders import build_task, build_trainer
from modernenc.train.config import load_config

ADE = SHARED_DATA / "ade_corpus_v2"
TOKENIZER = SHARED_DATA / "tokenizers" / "modernbert"


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    """Short real ADE sentences with their mentions: 32 with mentions and 8 without per file. Validation is
    the training file, so a short run learns enough for its predictions to be worth comparing."""
    positives, negatives = load_ade_sentences(ADE)
    rows, _ = build_span_rows(read_relation_lines(ADE))
    splits = span_splits(make_splits(positives, negatives, seed=42), rows)
    out = tmp_path_factory.mktemp("ade-spans")
    for name, source in (("train", "train"), ("test", "test")):
        short = [r for r in splits[source] if len(r["text"]) < 90]
        write_rows(
            out / f"{name}.jsonl",
            [r for r in short if r["spans"]][:32] + [r for r in short if not r["spans"]][:8],
        )
    (out / "validation.jsonl").write_bytes((out / "train.jsonl").read_bytes())
    return out


@pytest.fixture(scope="module")
def run(split, tmp_path_factory) -> tuple[Path, object]:
    folder = tmp_path_factory.mktemp("run")
    cfg = load_config(
        "quickstart/finetune_ade_spans",
        [
            f"save_folder={folder}",
            "model.init_from=null",
            "model.preset=tiny",
            f"data.train={split / 'train.jsonl'}",
            f"data.eval={split / 'validation.jsonl'}",
            f"data.test={split / 'test.jsonl'}",
            f"data.tokenizer={TOKENIZER}",
            "data.micro_batch_size=8",
            "optimizer.lr=3e-3",
            "scheduler.t_warmup=0ba",
            "max_duration=8ep",
            "eval_interval=4ep",
            "save_interval=8ep",
            "evaluation.early_stopping_patience=0",
            "logging.progress_bar=false",
        ],
    )
    parts = build_task(cfg)
    trainer = build_trainer(cfg, parts=parts)
    trainer.fit()
    parts.finish(trainer)
    trainer.close()
    best = next(c for c in parts.callbacks if type(c).__name__ == "BestCheckpoint")
    return folder, best


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def hf_tags(model_dir: Path, texts: list[str]) -> tuple[list[list[str]], list]:
    """transformers' own model and tokenizer, one text at a time: tags per token and offsets, no specials."""
    model = AutoModelForTokenClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tags, offsets = [], []
    with torch.no_grad():
        for text in texts:
            enc = tokenizer(text, return_tensors="pt", return_offsets_mapping=True)
            mapping = enc.pop("offset_mapping")[0, 1:-1].tolist()
            ids = model(**enc).logits[0, 1:-1].argmax(-1).tolist()
            tags.append([model.config.id2label[i] for i in ids])
            offsets.append(mapping)
    return tags, offsets


def gold_tags(texts: list[str], rows: list[dict], offsets: list) -> list[list[str]]:
    """BIO tags from the gold character spans and transformers' offsets (a token is in a span if it
    overlaps it), built here without our tagging code."""
    out = []
    for row, mapping in zip(rows, offsets, strict=True):
        tags = ["O"] * len(mapping)
        for s in row["spans"]:
            inside = [i for i, (a, b) in enumerate(mapping) if a < s["end"] and b > s["start"]]
            for k, i in enumerate(inside):
                tags[i] = ("B-" if k == 0 else "I-") + s["label"]
        out.append(tags)
    return out


def test_best_checkpoint_is_chosen_by_entity_f1_equal_to_seqeval(run, split):
    folder, best = run
    assert best.monitor == "EntityF1" and best.best > 0.2  # it learned something
    rows = read(split / "validation.jsonl")
    texts = [r["text"] for r in rows]
    predicted, offsets = hf_tags(folder / "best-hf", texts)
    theirs = classification_report(
        gold_tags(texts, rows, offsets),
        predicted,
        mode="strict",
        scheme=IOB2,
        output_dict=True,
        zero_division=0,
    )
    # The composer metric at the kept evaluation, and the written report, are seqeval's numbers.
    assert best.best == pytest.approx(theirs["micro avg"]["f1-score"], abs=1e-6)
    report = json.loads((folder / "eval" / "report.json").read_text())
    ours = report["splits"]["validation"]["entities"]
    for name in ("DRUG", "EFFECT"):
        assert ours[name]["f1"] == pytest.approx(theirs[name]["f1-score"], abs=1e-6)
        assert ours[name]["support"] == theirs[name]["support"]
    assert ours["micro"]["precision"] == pytest.approx(theirs["micro avg"]["precision"], abs=1e-6)
    assert set(report["splits"]) == {"validation", "test"}
    positives = report["splits"]["test"]["entities_texts_with_gold"]
    assert report["splits"]["test"]["num_texts_with_gold"] == 32 and positives["micro"]["support"] > 32


def test_transformers_pipeline_returns_our_spans(run, split):
    folder, _ = run
    tagger = SpanTagger.from_folder(folder / "best-hf")
    texts = [r["text"] for r in read(split / "train.jsonl")]
    ours = tagger.extract(texts)
    ner = pipeline("token-classification", model=str(folder / "best-hf"), aggregation_strategy="simple")
    tags, _ = hf_tags(folder / "best-hf", texts)
    compared = found = 0
    for text, spans, theirs, seq in zip(texts, ours, ner(texts), tags, strict=True):
        if entities_from_tags(seq) != _lenient(seq):
            continue  # an I-X after O: the pipeline opens an entity there, strict IOB2 does not
        compared += 1
        found += len(spans)
        # transformers' offsets keep the space a byte-level token starts with; ours do not
        start = [
            e["start"] + len(text[e["start"] : e["end"]]) - len(text[e["start"] : e["end"]].lstrip())
            for e in theirs
        ]
        assert [(s, e["end"], e["entity_group"]) for s, e in zip(start, theirs, strict=True)] == [
            (s["start"], s["end"], s["label"]) for s in spans
        ]
        assert [s["score"] for s in spans] == pytest.approx([float(e["score"]) for e in theirs], abs=1e-4)
    assert compared >= 30 and found >= 30


def _lenient(tags: list[str]) -> list:
    """Entities as the pipeline's simple aggregation groups them: a run of one type, split at each B-."""
    found, i = [], 0
    while i < len(tags):
        if tags[i] == "O":
            i += 1
            continue
        label, end = tags[i][2:], i + 1
        while end < len(tags) and tags[end] == f"I-{label}":
            end += 1
        found.append((label, i, end))
        i = end
    return found


def test_predict_writes_character_spans_and_with_spans_adds_them_to_flagged_rows(
    run, split, tmp_path, capsys
):
    folder, _ = run
    tagger_dir = folder / "best-hf"
    test = split / "test.jsonl"
    assert run_cli("predict", tagger_dir, test, "--out", tmp_path / "spans.jsonl") == 0
    assert "texts in" in capsys.readouterr().out
    written = read(tmp_path / "spans.jsonl")
    expected = SpanTagger.from_folder(tagger_dir).extract([r["text"] for r in written])
    assert [same(r["spans"]) for r in written] == [same(s) for s in expected]
    assert scores(r["spans"] for r in written) == pytest.approx(scores(expected), abs=1e-5)
    assert all(r["text"][s["start"] : s["end"]] == s["text"] for r in written for s in r["spans"])
    assert all("input_spans" in r for r in written)  # the gold spans of the input, kept beside ours
    record = json.loads((tmp_path / "spans.jsonl.provenance.json").read_text())
    weights = (tagger_dir / "model.safetensors").read_bytes()
    assert record["model"]["weights_sha256"] == hashlib.sha256(weights).hexdigest()
    assert record["output"]["rows"] == len(written)
    assert record["output"]["with_spans"] == sum(1 for r in written if r["spans"])

    classifier = build_sentence_classifier(tmp_path / "clf")
    assert run_cli("predict", classifier, test, "--out", tmp_path / "probs.jsonl") == 0
    probs = [r["probability"] for r in read(tmp_path / "probs.jsonl")]
    cut = float(np.median(probs))
    args = ["predict", classifier, test, "--threshold", cut, "--with-spans", tagger_dir]
    assert run_cli(*args, "--out", tmp_path / "flagged.jsonl") == 0
    flagged = read(tmp_path / "flagged.jsonl")
    assert 0 < sum(r["probability"] >= cut for r in flagged) < len(flagged)
    record = json.loads((tmp_path / "flagged.jsonl.provenance.json").read_text())
    assert record["spans_model"]["weights_sha256"] == hashlib.sha256(weights).hexdigest()
    assert record["spans_model"]["path"] == str(tagger_dir.absolute())
    assert record["decision"]["threshold"] == cut and record["decision"]["threshold_source"] == "--threshold"
    for row, spans in zip(flagged, expected, strict=True):
        assert same(row["spans"]) == (same(spans) if row["probability"] >= cut else None)


def same(spans: list[dict] | None) -> list[tuple] | None:
    """Spans as comparable tuples, without the score (batching changes its last float bits)."""
    if spans is None:
        return None
    return [(s["start"], s["end"], s["label"], s["text"]) for s in spans]


def scores(rows) -> list[float]:
    return [s["score"] for spans in rows for s in spans]


def build_sentence_classifier(folder: Path) -> Path:
    from modernenc.model import ModernEncoderConfig, ModernEncoderForSequenceClassification

    torch.manual_seed(0)
    config = ModernEncoderConfig.from_preset("tiny", vocab_size=50368, initializer_range=0.5)
    ModernEncoderForSequenceClassification(config).save_pretrained(folder, tokenizer_path=TOKENIZER)
    return folder


def test_a_model_of_the_wrong_kind_gets_one_sentence(run, split, tmp_path, capsys):
    folder, _ = run
    tagger, test = folder / "best-hf", split / "test.jsonl"
    classifier = build_sentence_classifier(tmp_path / "clf")
    out = ["--out", tmp_path / "x.jsonl"]
    err = cli_error(capsys, "predict", classifier, test, "--with-spans", classifier, *out)
    assert "holds a ModernBertForSequenceClassification, not a span tagger" in err
    err = cli_error(capsys, "predict", tagger, test, "--with-spans", tagger, *out)
    assert "is a span tagger; --with-spans takes the span tagger and MODEL_DIR a sentence classifier" in err
    err = cli_error(capsys, "predict", tagger, test, "--threshold", "0.3", *out)
    assert "--threshold applies to sentence classifiers" in err
    assert not (tmp_path / "x.jsonl").exists()
    # A token classifier whose labels are not BIO tags has no spans to give.
    from modernenc.model import ModernEncoderConfig, ModernEncoderForTokenClassification

    config = ModernEncoderConfig.from_preset("tiny", vocab_size=50368, id2label={0: "O", 1: "DRUG"})
    ModernEncoderForTokenClassification(config).save_pretrained(tmp_path / "io", tokenizer_path=TOKENIZER)
    err = cli_error(capsys, "predict", tmp_path / "io", test, *out)
    assert "tags tokens with ['O', 'DRUG'], not BIO tags" in err


def test_quickstart_span_rows_report_what_seqeval_measures(run, split, tmp_path, monkeypatch):
    """The results table's span rows, from a tiny run and split put where the quickstart leaves them."""
    import modernenc.pv.quickstart as chain
    from modernenc.pv.results import format_span_table

    folder, _ = run
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / chain.SPANS_RUN).symlink_to(folder)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ade-spans").symlink_to(split)
    rows = chain.span_rows()
    rows_test = read(split / "test.jsonl")
    texts = [r["text"] for r in rows_test]
    predicted, offsets = hf_tags(folder / "best-hf", texts)
    theirs = classification_report(
        gold_tags(texts, rows_test, offsets),
        predicted,
        mode="strict",
        scheme=IOB2,
        output_dict=True,
        zero_division=0,
    )
    ours = rows[chain.SPANS_LABEL]["scores"]["entities"]
    assert ours["micro"]["f1"] == pytest.approx(theirs["micro avg"]["f1-score"], abs=1e-6)
    assert ours["micro"]["support"] == theirs["micro avg"]["support"]
    table = format_span_table(rows)
    assert f"| {chain.SPANS_LABEL} | all | " in table and f"| {chain.SPANS_LABEL} | positive | " in table
    assert "| lexicon of training mentions (baseline) | all |" in table
    assert "SpERT (published): 10-fold cross-validation" in table and "| 89.6 |" in table
    assert (folder / "eval" / "test_spans.jsonl").is_file()  # written by the predict path it times
