"""Span rows for token classification: checks with one-sentence errors, BIO tags on every token, and the way
back from tags to character spans, against the tokenizer's own offsets and the whole ADE corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SHARED_DATA

from modernenc.tasks.entities import bio_tags
from modernenc.tasks.spans import (
    char_spans,
    check_spans,
    tag_entities,
    tokenize_spans,
)
from modernenc.utils.tables import DataColumnError

TOKENIZER = SHARED_DATA / "tokenizers" / "modernbert"
TAGS = bio_tags(["DRUG", "EFFECT"])


def span(start: int, end: int, label: str, text: str | None = None) -> dict:
    return {"start": start, "end": end, "label": label, **({"text": text} if text is not None else {})}


def test_every_token_is_tagged_and_tags_map_back_to_the_characters():
    text = "Intravenous azithromycin-induced ototoxicity."
    spans = [(12, 24, "DRUG"), (33, 44, "EFFECT")]
    out = tokenize_spans([text], [spans], TAGS, TOKENIZER, 64)
    names = ["-" if i < 0 else TAGS[i] for i in out.labels[0]]
    pieces = [text[s:e] for s, e in out.offsets[0]]
    # [CLS] Int ra ven ous Ġaz ith romycin - induced Ġot otoxicity . [SEP]; offsets lose Ġ's space
    assert pieces == [
        "",
        "Int",
        "ra",
        "ven",
        "ous",
        "az",
        "ith",
        "romycin",
        "-",
        "induced",
        "ot",
        "otoxicity",
        ".",
        "",
    ]
    assert names == [
        "-",
        "O",
        "O",
        "O",
        "O",
        "B-DRUG",
        "I-DRUG",
        "I-DRUG",
        "O",
        "O",
        "B-EFFECT",
        "I-EFFECT",
        "O",
        "-",
    ]
    entities = tag_entities(out.labels[0], out.labels[0], TAGS)
    assert sorted(char_spans(text, out.offsets[0], entities)) == spans
    assert out.num_misaligned == 0 and out.num_truncated == 0


def test_spans_inside_a_token_are_widened_and_counted_and_cuts_are_counted():
    text = "NSAIDs and lithium toxicity were seen."
    out = tokenize_spans([text], [[(0, 5, "DRUG"), (11, 27, "EFFECT")]], TAGS, TOKENIZER, 6)
    assert out.num_misaligned == 1  # "NSAID" ends inside the token "IDs"
    assert out.num_truncated == 1 and out.num_spans_cut == 1  # the effect starts after token 5
    sep = out.input_ids[0][-1]
    assert len(out.input_ids[0]) == 6 and out.labels[0][-1] == -100 and len(out.offsets[0]) == 6
    assert sep == tokenize_spans([text], [[]], TAGS, TOKENIZER, 64).input_ids[0][-1]  # [SEP] kept


def test_the_whole_corpus_round_trips_through_tags(tmp_path):
    """Gold spans -> tags -> spans gives the gold spans back, except the few that end inside a token."""
    from conftest import run_cli

    assert (
        run_cli(
            "prepare-ade", "--task", "spans", "--source", SHARED_DATA / "ade_corpus_v2", "--out", tmp_path
        )
        == 0
    )
    rows = [json.loads(line) for line in (tmp_path / "test.jsonl").read_text().splitlines()]
    texts = [r["text"] for r in rows]
    gold = check_spans(texts, [r["spans"] for r in rows], "test.jsonl", ["DRUG", "EFFECT"])
    out = tokenize_spans(texts, gold, TAGS, TOKENIZER, 512)
    lost = 0
    for i, text in enumerate(texts):
        back = sorted(char_spans(text, out.offsets[i], tag_entities(out.labels[i], out.labels[i], TAGS)))
        lost += len(set(gold[i]) - set(back))
    assert lost == out.num_misaligned <= 3


@pytest.mark.parametrize(
    ("spans", "message"),
    [
        ("DRUG", r"row 1: spans must be a list of \{start, end, label\} objects; got 'DRUG'"),
        (
            [{"start": 0, "label": "DRUG"}],
            r"row 1, span 1 .* must be an object with keys start, end and label",
        ),
        ([span(3, 40, "DRUG")], r"span 1 .* is out of range for a text of 22 characters"),
        ([span(-1, 3, "DRUG")], "out of range"),
        ([span(5, 5, "DRUG")], "out of range"),
        ([span(0, 4, "EFFECT", "Rahs")], r"does not match its text: text\[0:4\] is 'Rash'"),
        ([span(11, 22, "DOSE")], r"has the entity type 'DOSE', which is not one of \['DRUG', 'EFFECT'\]"),
        (
            [span(0, 4, "EFFECT"), span(2, 8, "DRUG")],
            r"spans \(0, 4, 'EFFECT'\) and \(2, 8, 'DRUG'\) overlap",
        ),
        ([span(0.0, 4, "EFFECT")], "start and end must be integers"),
    ],
)
def test_bad_spans_get_one_sentence_naming_file_row_and_span(spans, message):
    with pytest.raises(DataColumnError, match=message) as raised:
        check_spans(["Rash after amoxicillin"], [spans], "mine.jsonl", ["DRUG", "EFFECT"])
    assert str(raised.value).startswith("mine.jsonl: row 1") and "\n" not in str(raised.value)


def _yaml(folder: Path, **data: str) -> Path:
    entries = {
        "train": folder / "train.jsonl",
        "eval": folder / "validation.jsonl",
        "label_column": "spans",
        "tokenizer": TOKENIZER,
        "max_seq_len": 64,
        "micro_batch_size": 4,
        **data,
    }
    text = "\n".join(
        [
            "run_name: spans",
            f"save_folder: {folder / 'run'}",
            "model: {task: token_classification, preset: tiny}",
            "data: {" + ", ".join(f"{k}: {v}" for k, v in entries.items()) + "}",
            "max_duration: 1ba",
            "logging: {progress_bar: false}",
        ]
    )
    (folder / "spans.yaml").write_text(text + "\n")
    return folder / "spans.yaml"


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_training_data_errors_name_the_file_and_the_unknown_type(tmp_path):
    from modernenc.tasks.classification import load_classification_data
    from modernenc.train.config import load_config

    good = {"text": "Rash after amoxicillin.", "spans": [span(0, 4, "EFFECT"), span(11, 22, "DRUG")]}
    _write(tmp_path / "train.jsonl", [good] * 3)
    _write(tmp_path / "validation.jsonl", [good, {"text": "Dizzy on 5 mg.", "spans": []}])
    data = load_classification_data(load_config(_yaml(tmp_path)))
    assert data.label_names == TAGS  # the training types, sorted
    _write(tmp_path / "validation.jsonl", [good, {"text": "Dizzy on 5 mg.", "spans": [span(9, 13, "DOSE")]}])
    with pytest.raises(
        DataColumnError, match=r"validation.jsonl: row 2, span 1 .*'DOSE', which is not one of"
    ):
        load_classification_data(load_config(_yaml(tmp_path)))
    # Declared types (data.labels) bind the training file too, and fix the tag order.
    cfg = load_config(_yaml(tmp_path), ["data.labels=[EFFECT,DRUG]", f"data.eval={tmp_path / 'train.jsonl'}"])
    assert load_classification_data(cfg).label_names == bio_tags(["EFFECT", "DRUG"])
    cfg = load_config(_yaml(tmp_path), ["data.labels=[DRUG]", f"data.eval={tmp_path / 'train.jsonl'}"])
    with pytest.raises(
        DataColumnError, match=r"train.jsonl: row 1, span 1 .*'EFFECT', which is not one of \['DRUG'\]"
    ):
        load_classification_data(cfg)
    # A sequence classifier cannot take span lists as its labels.
    cfg = load_config(_yaml(tmp_path), ["model.task=classification", f"data.eval={tmp_path / 'train.jsonl'}"])
    with pytest.raises(ValueError, match="holds lists .* set model.task=token_classification"):
        load_classification_data(cfg)
