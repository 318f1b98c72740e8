"""`modernenc check-leaks`: held-out sentences planted in real prepared shards are found, clean shards pass,
and the shards are read without being touched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SHARED_DATA, cli_error, run_cli

from modernenc.data.leaks import find_leaks, iter_samples, shard_folders
from modernenc.data.masking import load_tokenizer

TOKENIZER = SHARED_DATA / "tokenizers" / "modernbert"
HELD_OUT = [
    "Acute renal failure developed after the third course of high-dose methotrexate therapy.",
    "Severe hepatotoxicity was attributed to the combination of isoniazid and rifampicin in this patient.",
    "Fatal outcome.",  # short: a leak only as a whole sample
]


def pubmed_docs(n: int) -> list[str]:
    lines = (SHARED_DATA / "pubmed" / "pubmed_000.jsonl").read_text().splitlines()[:n]
    return [json.loads(line)["text"] for line in lines]


def prepare(tmp_path: Path, docs: list[str], name: str, max_length: int = 64) -> Path:
    source = tmp_path / f"{name}.jsonl"
    source.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    out = tmp_path / name
    code = run_cli(
        "prepare-data", "--input", source, "--format", "jsonl", "--tokenizer", TOKENIZER, "--output", out,
        "--max-length", max_length, "--validation-fraction", "0.2", "--no-progress",
    )  # fmt: skip
    assert code == 0
    return out


def plant_across_a_chunk_boundary(tokenizer, document: str, sentence: str, body: int) -> str:
    """`document`'s words, as many as put `sentence`'s first token 8 tokens before a chunk boundary."""
    filler = document.split()
    for n in range(1, len(filler)):
        text = " ".join(filler[:n]) + " " + sentence
        encoding = tokenizer.encode(text, add_special_tokens=False)
        start = encoding.char_to_token(len(text) - len(sentence))
        if start % body == body - 8:
            return text + " " + " ".join(filler[n:])
    raise AssertionError("no prefix puts the sentence across a boundary")


@pytest.fixture
def held_out(tmp_path) -> Path:
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps({"text": s, "label": 1}) + "\n" for s in HELD_OUT))
    return path


def files_and_times(folder: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def test_clean_shards_pass_and_are_left_untouched(tmp_path, held_out, capsys):
    corpus = prepare(tmp_path, pubmed_docs(40), "clean")
    before = files_and_times(corpus)
    assert (
        run_cli(
            "check-leaks",
            "--shards",
            corpus,
            "--held-out",
            held_out,
            "--tokenizer",
            TOKENIZER,
            "--no-progress",
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "no held-out sentence found in any shard" in out and "for 3 held-out sentences" in out
    assert files_and_times(corpus) == before  # compressed shards were read in memory, nothing written


def test_a_planted_test_sentence_fails_the_check(tmp_path, held_out, capsys):
    docs = pubmed_docs(40)
    tokenizer = load_tokenizer(TOKENIZER)
    docs[7] = plant_across_a_chunk_boundary(tokenizer, docs[7], HELD_OUT[1], body=64 - 2)
    corpus = prepare(tmp_path, docs, "leaky")
    chunks = [
        tokenizer.decode(ids.tolist()) for folder in shard_folders(corpus) for ids in iter_samples(folder)
    ]
    assert not any(HELD_OUT[1] in c for c in chunks)  # really cut in two

    err = cli_error(
        capsys,
        "check-leaks",
        "--shards",
        corpus,
        "--held-out",
        held_out,
        "--tokenizer",
        TOKENIZER,
        "--no-progress",
    )
    assert "1 held-out sentence(s) found in the shards" in err and "contains 'Severe hepatotoxicity" in err


def test_short_sentences_count_only_as_whole_samples(tmp_path, held_out):
    docs = pubmed_docs(20)
    docs.append(HELD_OUT[2])  # a sentence-level corpus line
    docs[3] = f"{docs[3]} Fatal outcome."  # inside a longer text: not a leak by itself
    corpus = prepare(tmp_path, docs, "short")
    report = find_leaks(shard_folders(corpus), HELD_OUT, load_tokenizer(TOKENIZER), progress=False)
    assert [(leak.sentence, leak.whole_sample) for leak in report.leaks] == [("Fatal outcome.", True)]
    assert sum(report.samples.values()) == sum(1 for f in shard_folders(corpus) for _ in iter_samples(f))


@pytest.fixture(scope="module")
def other_tokenizer(tmp_path_factory) -> Path:
    """A 512-id BPE tokenizer of its own, trained on PubMed: not the one the shards are prepared with."""
    folder = tmp_path_factory.mktemp("tokenizer")
    texts = folder / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": d}) + "\n" for d in pubmed_docs(50)))
    args = ("--input", texts, "--format", "jsonl", "--vocab-size", 512, "--output", folder / "bpe")
    assert run_cli("train-tokenizer", *args, "--no-progress") == 0
    return folder / "bpe"


def test_shards_are_searched_only_with_the_tokenizer_they_were_prepared_with(
    tmp_path, held_out, other_tokenizer, capsys
):
    """With another tokenizer no planted sentence is ever found: the check passed and proved nothing."""
    docs = pubmed_docs(20)
    docs[3] += " " + HELD_OUT[0]
    corpus = prepare(tmp_path, docs, "planted")
    args = ("check-leaks", "--shards", corpus, "--held-out", held_out, "--no-progress")
    assert run_cli(*args, "--tokenizer", TOKENIZER) == 1  # found, with the right one
    message = cli_error(capsys, *args, "--tokenizer", other_tokenizer)
    assert message.startswith(
        f"modernenc check-leaks: error: {corpus / 'train'} was prepared with another tokenizer than "
        f"--tokenizer {other_tokenizer} (one of 50,368 ids, not 512); its ids would be read as other tokens"
    )
    # A corpus whose report does not record its tokenizer (an older modernenc's): every id is checked.
    report = json.loads((corpus / "report.json").read_text())
    del report["tokenizer_sha256"], report["tokenizer_vocab_size"]
    (corpus / "report.json").write_text(json.dumps(report))
    message = cli_error(capsys, *args, "--tokenizer", other_tokenizer)
    assert f"sample 0 of {corpus / 'train'} holds token id 50282" in message  # [SEP]
    assert "beyond the tokenizer's 512 ids: the shards were prepared with another tokenizer" in message
