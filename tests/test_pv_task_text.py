"""Task-adaptive MLM text for ADE: the corpus sentences outside validation and test, proven absent from
the prepared shards by `modernenc check-leaks` on the real split."""

from __future__ import annotations

import json
import re

import pytest
from conftest import SHARED_DATA, cli_error, run_cli

from modernenc.pv.ade_data import read_jsonl
from modernenc.pv.task_text import held_out_sentences, task_adaptive_sentences, write_task_text

ADE = SHARED_DATA / "ade_corpus_v2"
TOKENIZER = SHARED_DATA / "tokenizers" / "modernbert"


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    out = tmp_path_factory.mktemp("ade")
    assert run_cli("prepare-ade", "--source", ADE, "--out", out, "--force") == 0
    return out


def word_string(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def test_task_text_is_every_sentence_outside_validation_and_test(split):
    text = task_adaptive_sentences(ADE, split)
    rows = {s: read_jsonl(split / f"{s}.jsonl") for s in ("train", "validation", "test")}
    held = {r["text"] for s in ("validation", "test") for r in rows[s]}
    train = {r["text"] for r in rows["train"]}
    corpus = {line.split("|")[1].strip() for line in (ADE / "DRUG-AE.rel").read_text().splitlines() if line}
    corpus |= {
        line.split(" ", 2)[2].strip() for line in (ADE / "ADE-NEG.txt").read_text().splitlines() if line
    }
    outside = corpus - held
    assert len(corpus) == 20_896 and len(outside) == 20_896 - 3_418

    kept = set(text.sentences)
    assert kept <= outside and not kept & held
    assert len(text.sentences) == len(kept) == text.from_train + text.unused
    assert text.from_train == len(kept & train) and text.unused == len(kept - train)
    # What was left out equals, or contains, a held-out sentence once punctuation and case are ignored.
    held_words = [word_string(h) for h in held]
    for dropped in outside - kept:
        w = word_string(dropped)
        assert any(w == h or (len(h.split()) >= 6 and f" {h} " in f" {w} ") for h in held_words), dropped
    assert text.near_duplicates == len(outside - kept) and text.near_duplicates < 30
    assert set(held_out_sentences(split)) == held


def test_task_text_shards_pass_the_leak_check_and_a_planted_test_sentence_fails(split, tmp_path, capsys):
    text = task_adaptive_sentences(ADE, split)
    path = write_task_text(text, tmp_path / "task.jsonl", repeats=2)
    lines = [json.loads(line)["text"] for line in path.read_text().splitlines()]
    assert lines[:4] == [text.sentences[0]] * 2 + [text.sentences[1]] * 2 and len(lines) == 2 * len(
        text.sentences
    )
    test_sentence = read_jsonl(split / "test.jsonl")[0]["text"]
    (tmp_path / "planted.jsonl").write_text(json.dumps({"text": test_sentence}) + "\n")

    def prepare(inputs, out):
        argv = ["prepare-data", "--input", *inputs, "--format", "jsonl", "--tokenizer", TOKENIZER]
        assert run_cli(*argv, "--output", out, "--max-length", 128, "--no-progress") == 0

    check = ["check-leaks", "--held-out", split / "validation.jsonl", split / "test.jsonl"]
    check += ["--tokenizer", TOKENIZER, "--no-progress", "--shards"]
    prepare([path], tmp_path / "clean")
    assert run_cli(*check, tmp_path / "clean") == 0
    prepare([path, tmp_path / "planted.jsonl"], tmp_path / "leaky")
    err = cli_error(capsys, *check, tmp_path / "leaky")
    assert "1 held-out sentence(s) found" in err and repr(test_sentence[:80]) in err


def test_anneal_text_drops_domain_documents_with_any_ade_sentence_and_groups_the_task_text(split, tmp_path):
    from modernenc.pv.ade_data import load_ade_sentences
    from modernenc.pv.task_text import group_by_abstract, write_anneal_text

    positives, _ = load_ade_sentences(ADE)
    train_positive = next(r["text"] for r in read_jsonl(split / "train.jsonl") if r["label"] == 1)
    assert train_positive in positives  # any ADE sentence, training split or not, removes a domain document
    domain = tmp_path / "domain.jsonl"
    docs = ["An abstract about enzyme kinetics in yeast cells.", f"Case report. {train_positive} Discussion."]
    domain.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    text = task_adaptive_sentences(ADE, split)
    made = write_anneal_text([domain], ADE, text, tmp_path / "mix.jsonl", repeats=3)
    lines = [json.loads(line)["text"] for line in made.path.read_text().splitlines()]
    assert (made.documents, made.dropped) == (1, 1) and lines[0] == docs[0]
    grouped = lines[1:]
    assert len(grouped) == 3 * made.task_documents and grouped[0] == grouped[1] == grouped[2]

    # One document per PubMed abstract: every sentence once, all of a document's from the same PMID.
    pmid_of = {}
    for line in (ADE / "ADE-NEG.txt").read_text().splitlines():
        pmid, _, sentence = line.split(" ", 2)
        pmid_of.setdefault(sentence.strip(), pmid)
    for line in (ADE / "DRUG-AE.rel").read_text().splitlines():
        pmid, sentence = line.split("|")[:2]
        pmid_of.setdefault(sentence.strip(), pmid)
    documents = group_by_abstract(text.sentences, ADE)
    assert documents == grouped[::3]
    expected: dict[str, list[str]] = {}
    for sentence in text.sentences:
        expected.setdefault(pmid_of[sentence], []).append(sentence)
    assert len(documents) == len(expected) < len(text.sentences) / 4
    for pmid, document in zip(sorted(expected), documents, strict=True):
        group = expected[pmid]
        assert len(document) == sum(map(len, group)) + len(group) - 1  # the group, space-joined, nothing else
        assert all(sentence in document for sentence in group)
