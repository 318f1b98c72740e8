"""Corpus -> MDS preparation: readers, chunking, hold-out, skips, --force, decontamination, HF loading."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from streaming import LocalDataset
from streaming.base.compression import decompress

from modernenc.data.corpus import read_text, read_wikiextractor
from modernenc.data.masking import load_tokenizer
from modernenc.data.mds import assign_split, chunk_tokens
from modernenc.pv.bundled_data import shared_data_dir

ROOT = Path(__file__).resolve().parents[1]
DATA = shared_data_dir()
TOKENIZER = DATA / "tokenizers" / "modernbert"
CLS, SEP = 50281, 50282
ERR = "modernenc prepare-data: error: "


def prepare(argv: list[str]) -> int:
    return run_cli("prepare-data", *argv)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(TOKENIZER)


def run(out: Path, inputs: list, *extra: str) -> int:
    argv = [
        "--input",
        *map(str, inputs),
        "--tokenizer",
        str(TOKENIZER),
        "--output",
        str(out),
        "--no-progress",
    ]
    return prepare([*argv, *extra])


def read_chunks(out: Path, split: str = "train") -> list[np.ndarray]:
    """Read shards back in write order, without the streaming cache machinery under test elsewhere."""
    for shard in json.loads((out / split / "index.json").read_text())["shards"]:
        raw = out / split / shard["raw_data"]["basename"]
        if not raw.exists():  # LocalDataset reads raw shards only; decompress the zstd copies
            raw.write_bytes(decompress("zstd", (out / split / shard["zip_data"]["basename"]).read_bytes()))
    ds = LocalDataset(str(out), split=split)
    return [np.asarray(ds[i]["input_ids"], dtype=np.int64) for i in range(len(ds))]


def pubmed_slice(tmp_path: Path, n: int) -> tuple[Path, list[str]]:
    lines = (DATA / "pubmed" / "pubmed_000.jsonl").read_text(encoding="utf-8").splitlines()[:n]
    path = tmp_path / "pubmed.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, [json.loads(line)["text"] for line in lines]


def bodies_by_document(chunks: list[np.ndarray]) -> list[int]:
    """Concatenate chunk bodies (CLS/SEP stripped) in write order; checks the framing on the way."""
    out = []
    for c in chunks:
        assert c[0] == CLS and c[-1] == SEP
        out.extend(c[1:-1].tolist())
    return out


# ------------------------------------------------------------------ chunking


def test_chunk_tokens_by_hand():
    chunks = chunk_tokens(list(range(10)), max_length=6, cls_id=CLS, sep_id=SEP)
    assert [c.tolist() for c in chunks] == [
        [CLS, 0, 1, 2, 3, SEP],
        [CLS, 4, 5, 6, 7, SEP],
        [CLS, 8, 9, SEP],
    ]
    assert [c.tolist() for c in chunk_tokens([7, 8, 9, 10], 6, CLS, SEP)] == [[CLS, 7, 8, 9, 10, SEP]]


def test_split_assignment_is_deterministic_and_roughly_sized():
    texts = [f"document number {i}" for i in range(4000)]
    first = [assign_split(t, 0.1) for t in texts]
    assert first == [assign_split(t, 0.1) for t in texts]
    assert 300 < first.count("validation") < 500  # binomial(4000, 0.1): mean 400, sd 19
    assert all(assign_split(t, 0.0) == "train" for t in texts[:50])
    assert [assign_split(t, 0.1, seed=1) for t in texts] != first


# ------------------------------------------------------------------ end to end


def test_jsonl_round_trip_matches_direct_tokenization(tmp_path, tokenizer, capsys):
    src, texts = pubmed_slice(tmp_path, 40)
    out = tmp_path / "mds"
    assert run(out, [src], "--max-length", "128", "--validation-fraction", "0.25", "--shard-size", "4kb") == 0

    report = json.loads((out / "report.json").read_text())
    expected_split = [assign_split(t, 0.25) for t in texts]
    n_val = expected_split.count("validation")
    assert 0 < n_val < 40
    assert report["documents_read"] == 40
    assert report["documents_written"] == {"train": 40 - n_val, "validation": n_val}
    for split in ("train", "validation"):
        want = [
            tok
            for t, s in zip(texts, expected_split, strict=True)
            if s == split
            for tok in tokenizer.encode(t, add_special_tokens=False).ids
        ]
        chunks = read_chunks(out, split)
        assert all(len(c) <= 128 for c in chunks)
        assert bodies_by_document(chunks) == want  # nothing truncated, nothing reordered
        assert report["chunks"][split] == len(chunks)
        assert report["tokens"][split] == sum(len(c) for c in chunks)
        index = json.loads((out / split / "index.json").read_text())
        assert report["shards"][split] == len(index["shards"])
        assert all(s["zip_data"]["basename"].endswith(".mds.zstd") for s in index["shards"])
    assert report["shards"]["train"] > 1
    printed = capsys.readouterr().out
    assert "documents read      40" in printed and "chunk length" in printed


def test_one_huge_document_is_chunked_not_truncated(tmp_path, tokenizer):
    # "Anarchism", the first article, is many thousands of tokens long.
    wiki = (DATA / "wikipedia_en" / "AA" / "wiki_00").read_bytes()
    first_doc = wiki[: wiki.index(b"</doc>") + len(b"</doc>\n")]
    src = tmp_path / "wiki" / "wiki_00"
    src.parent.mkdir()
    src.write_bytes(first_doc)
    (doc,) = list(read_wikiextractor(src))
    n = len(tokenizer.encode(doc.text, add_special_tokens=False).ids)
    assert n > 5000

    out = tmp_path / "mds"
    assert run(out, [src.parent], "--max-length", "512") == 0
    chunks = read_chunks(out)
    assert len(chunks) == math.ceil(n / 510)
    assert [len(c) for c in chunks[:-1]] == [512] * (len(chunks) - 1)
    assert len(chunks[-1]) == n - 510 * (len(chunks) - 1) + 2
    assert bodies_by_document(chunks) == tokenizer.encode(doc.text, add_special_tokens=False).ids
    report = json.loads((out / "report.json").read_text())
    assert report["documents_split_into_chunks"] == 1
    assert report["chunk_length_histogram"]["=512"] == len(chunks) - 1


def test_document_of_exactly_max_length_is_one_chunk(tmp_path, tokenizer):
    exact, one_more = " the" * 62, " the" * 63  # 62 body tokens + CLS + SEP = 64
    assert len(tokenizer.encode(exact, add_special_tokens=False).ids) == 62
    src = tmp_path / "docs.txt"
    src.write_text(exact.strip() + "\n" + one_more.strip() + "\n", encoding="utf-8")
    out = tmp_path / "mds"
    assert run(out, [src], "--max-length", "64") == 0
    assert [len(c) for c in read_chunks(out)] == [64, 64, 3]


def test_skips_are_counted_with_reasons(tmp_path):
    src, _ = pubmed_slice(tmp_path, 5)
    with src.open("ab") as f:
        f.write(b'{"text": ""}\n')
        f.write(b'{"text": "   \\n  "}\n')
        f.write(b'{"text": "caf\xe9 latin-1 bytes"}\n')
        f.write(b"{not json}\n")
        f.write(b'{"body": "no text field"}\n')
    txt = tmp_path / "plain.txt"
    txt.write_bytes(b"a fine line of text\n\nbad \xff\xfe bytes here\nanother good line\n")
    out = tmp_path / "mds"
    assert run(out, [src, txt]) == 0
    report = json.loads((out / "report.json").read_text())
    skipped = report["skipped"]
    assert report["documents_read"] == 10 + 4
    assert skipped["empty document"] == 3  # "", whitespace-only, and the blank text line
    assert sum(n for reason, n in skipped.items() if reason.startswith("non-UTF-8")) == 2
    assert skipped["invalid JSON"] == 1
    assert skipped["missing string field 'text'"] == 1
    assert report["documents_written"]["train"] == 5 + 2
    # Each reason names its first documents by file and line: the JSONL's lines 6-10 were appended.
    examples = report["skipped_examples"]
    assert examples["non-UTF-8 bytes"] == [f"{src}:8", f"{txt}:3"]
    assert examples["empty document"] == [f"{src}:6", f"{src}:7", f"{txt}:2"]
    assert examples["invalid JSON"] == [f"{src}:9"]


def test_an_output_that_is_not_an_earlier_corpus_is_never_replaced(tmp_path, capsys):
    """A report.json does not make a folder a corpus; an input inside the output would be deleted with it."""
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    files = {"report.json": "{}", "thesis.tex": "chapter one", "draft.txt": "Aspirin may cause bleeding.\n"}
    for name, text in files.items():
        (thesis / name).write_text(text)
    assert run(thesis, [tmp_path / "thesis" / "draft.txt"], "--force") == 1
    assert (
        f"the input {thesis / 'draft.txt'} lies inside the --output folder {thesis}"
        in capsys.readouterr().err
    )
    src, _ = pubmed_slice(tmp_path, 2)
    assert run(thesis, [src], "--force") == 1
    assert "it holds draft.txt, report.json, thesis.tex" in capsys.readouterr().err
    assert run(tmp_path, [tmp_path], "--force") == 1
    assert f"the --output folder {tmp_path} is also an input" in capsys.readouterr().err
    assert {p.name: p.read_text() for p in thesis.iterdir()} == files


def test_no_usable_document_is_an_error_that_leaves_no_corpus(tmp_path, capsys):
    txt = tmp_path / "plain.txt"
    txt.write_text("a line of plain text\nanother line\n", encoding="utf-8")
    out = tmp_path / "mds"
    assert run(out, [txt], "--format", "jsonl") == 1  # every line is invalid JSON
    assert capsys.readouterr().err == (
        ERR + f"no documents were usable: read 2, skipped 2 (invalid JSON: 2 at {txt}:1, {txt}:2), dropped 0 "
        "by decontamination; nothing was written (each line of a JSONL file must be one JSON object; check "
        "--format and --text-field)\n"
    )
    assert not out.exists()  # no index.json or report.json for train.py to mistake for data
    out.mkdir()
    (tmp_path / "empty.txt").touch()
    assert run(out, [tmp_path / "empty.txt"]) == 1  # an empty folder needs no --force
    assert "no documents were usable: the input holds none" in capsys.readouterr().err
    assert list(out.iterdir()) == []
    assert run(out, [txt], "--validation-fraction", "0.99") == 1  # both lines hash below 0.99
    assert "all 2 usable documents went to the validation split" in capsys.readouterr().err
    assert list(out.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.txt", "mds", "plain.txt"]  # no staging left


def test_wikiextractor_non_utf8_document_is_reported(tmp_path):
    wiki = (DATA / "wikipedia_en" / "AA" / "wiki_00").read_bytes()
    starts = [m.start() for m in re.finditer(rb"<doc id=", wiki)][:4]
    docs = [wiki[a:b] for a, b in zip(starts, starts[1:], strict=False)]
    docs[1] = docs[1].replace(b"\n\n", b"\n\xc3\x28 broken\n\n", 1)  # invalid 2-byte sequence
    (tmp_path / "wiki_00").write_bytes(b"".join(docs))
    parsed = list(read_wikiextractor(tmp_path / "wiki_00"))
    assert len(parsed) == 3
    assert parsed[1].text is None and parsed[1].skip_reason.startswith("non-UTF-8")
    assert parsed[0].text.startswith("Anarchism") and parsed[2].text


def test_paragraph_mode_splits_on_blank_lines(tmp_path):
    src = tmp_path / "p.txt"
    src.write_text("first doc line one\nline two\n\n\nsecond doc\n\nthird doc\n\n", encoding="utf-8")
    assert [d.text for d in read_text(src, "paragraph")] == [
        "first doc line one\nline two",
        "second doc",
        "third doc",
    ]


def test_parquet_input_matches_jsonl_input(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    src, texts = pubmed_slice(tmp_path, 12)
    pq.write_table(pa.table({"abstract": texts}), tmp_path / "pubmed.parquet")
    assert run(tmp_path / "a", [src]) == 0
    assert run(tmp_path / "b", [tmp_path / "pubmed.parquet"], "--text-field", "abstract") == 0
    a, b = read_chunks(tmp_path / "a"), read_chunks(tmp_path / "b")
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


# ------------------------------------------------------------------ output folder safety


def test_rerun_requires_force_and_force_removes_old_shards(tmp_path, capsys):
    src, _ = pubmed_slice(tmp_path, 40)
    out = tmp_path / "mds"
    assert run(out, [src], "--shard-size", "4kb", "--max-length", "128") == 0
    old_shards = sorted((out / "train").glob("shard.*"))
    assert len(old_shards) > 3

    assert run(out, [src]) == 1
    assert "--force" in capsys.readouterr().err
    assert sorted((out / "train").glob("shard.*")) == old_shards  # untouched

    (tmp_path / "small").mkdir()
    small, _ = pubmed_slice(tmp_path / "small", 1)
    assert run(out, [small], "--force") == 0
    index = json.loads((out / "train" / "index.json").read_text())
    on_disk = sorted(p.name for p in (out / "train").iterdir() if p.name != "index.json")
    assert on_disk == sorted(s["zip_data"]["basename"] for s in index["shards"]) == ["shard.00000.mds.zstd"]
    assert len(read_chunks(out)) == 1


def test_force_replaces_a_corpus_that_training_has_read(tmp_path, capsys):
    """Training decompresses each shard beside it (streaming's `X.mds` next to `X.mds.zstd`): those copies
    are the corpus', not the user's files, so --force must not refuse them."""
    from modernenc.data.streaming_dataset import TokenStreamingDataset

    src, _ = pubmed_slice(tmp_path, 10)
    out = tmp_path / "mds"
    assert run(out, [src], "--max-length", "128") == 0
    samples = list(TokenStreamingDataset(out, split="train", shuffle=False))  # as training reads it
    assert samples and (out / "train" / "shard.00000.mds").is_file()
    (out / "validation" / "notes.txt").write_text("the user's")
    assert run(out, [src], "--max-length", "64", "--force") == 1
    # Only the user's file is named; the copies of the shards are not.
    assert "(or that changed since): validation/notes.txt. Refusing" in capsys.readouterr().err
    (out / "validation" / "notes.txt").unlink()
    assert run(out, [src], "--max-length", "64", "--force") == 0
    assert not (out / "train" / "shard.00000.mds").exists()  # the old corpus' copy went with it
    assert max(len(chunk) for chunk in read_chunks(out)) == 64


def test_failed_force_rerun_keeps_the_earlier_corpus(tmp_path, capsys):
    src, _ = pubmed_slice(tmp_path, 3)
    out = tmp_path / "mds"
    assert run(out, [src]) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text("not json\n")
    killed = tmp_path / ".mds.k1ll3d.partial"  # what a killed run leaves: a staging folder, marked as such
    killed.mkdir()
    (killed / ".modernenc-outputs.json").write_text('{"owner": {"kind": "partial"}, "entries": {}}')
    assert run(out, [bad_json], "--force") == 1  # fails after tokenizing started
    assert "no documents were usable" in capsys.readouterr().err
    assert run(out, [tmp_path / "missing"], "--force") == 1
    assert run(out, [src], "--force", "--tokenizer", str(tmp_path / "no-tokenizer.json")) == 1
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not killed.exists()


def test_force_refuses_to_wipe_a_foreign_folder(tmp_path, capsys):
    src, _ = pubmed_slice(tmp_path, 2)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    assert run(out, [src], "--force") == 1
    assert (
        "is not a prepared corpus (prepare-data) modernenc wrote: it holds notes.txt"
        in capsys.readouterr().err
    )
    assert (out / "notes.txt").read_text() == "precious"


# ------------------------------------------------------------------ decontamination


def _normalized(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def test_decontamination_drops_documents_with_ade_sentences(tmp_path):
    # pubmed_001 line 1704 quotes an ADE sentence; take a window of documents around it.
    lines = (DATA / "pubmed" / "pubmed_001.jsonl").read_text(encoding="utf-8").splitlines()[1690:1720]
    ade_rel = (DATA / "ade_corpus_v2" / "DRUG-AE.rel").read_text(encoding="utf-8").splitlines()
    ade_sentence = ade_rel[1].split("|")[1]  # a 25-word sentence; injected upper-cased with odd spacing
    lines.append(json.dumps({"text": f"Intro text. {ade_sentence.upper()}  More text follows here."}))
    src = tmp_path / "docs.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    texts = [json.loads(x)["text"] for x in lines]

    # Independent truth: brute-force normalized substring search over every ADE sentence of >= 6 words.
    sentences = {
        line.split("|")[1] for line in (DATA / "ade_corpus_v2" / "DRUG-AE.rel").read_text().splitlines()
    }
    sentences |= {
        line.split(" ", 2)[2] for line in (DATA / "ade_corpus_v2" / "ADE-NEG.txt").read_text().splitlines()
    }
    sentences |= {
        line.split("|")[1] for line in (DATA / "ade_corpus_v2" / "DRUG-DOSE.rel").read_text().splitlines()
    }
    norm = [f" {n} " for n in map(_normalized, sentences) if len(n.split()) >= 6]
    padded = [f" {_normalized(t)} " for t in texts]
    contaminated = [any(s in t for s in norm) for t in padded]
    assert contaminated[-1] and sum(contaminated) >= 2 and not all(contaminated)

    out = tmp_path / "mds"
    assert run(out, [src], "--decontaminate", str(DATA / "ade_corpus_v2")) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["decontaminated"] == sum(contaminated)
    assert report["documents_written"]["train"] == len(texts) - sum(contaminated)
    assert report["eval_sentences_indexed"] > 15_000


def test_decontamination_from_jsonl_eval_set(tmp_path):
    src, texts = pubmed_slice(tmp_path, 6)
    leaked = re.split(r"(?<=\.) ", texts[3].split("\n")[1])[1]  # the 2nd sentence of doc 3's abstract
    assert len(leaked.split()) >= 6
    eval_set = tmp_path / "eval.jsonl"
    eval_set.write_text(json.dumps({"sentence": leaked}) + "\n" + json.dumps({"sentence": "x y"}) + "\n")
    out = tmp_path / "mds"
    assert run(out, [src], "--decontaminate", str(eval_set), "--decontaminate-field", "sentence") == 0
    report = json.loads((out / "report.json").read_text())
    assert report["decontaminated"] == 1 and report["documents_written"]["train"] == 5
    assert report["eval_sentences_too_short"] == 1


def test_decontamination_set_with_a_bad_line_names_it_and_writes_nothing(tmp_path, capsys):
    src, _ = pubmed_slice(tmp_path, 2)
    eval_set = tmp_path / "eval.jsonl"
    eval_set.write_text('{"text": "a b c d e f"}\n{"text": broken\n')
    out = tmp_path / "mds"
    assert run(out, [src], "--decontaminate", str(eval_set)) == 1
    assert capsys.readouterr().err.startswith(ERR + f"{eval_set}:2 is not valid JSON")
    assert not out.exists()


# ------------------------------------------------------------------ Hugging Face datasets + CLI surface


def test_hf_builder_reads_local_files(tmp_path):
    src, _ = pubmed_slice(tmp_path, 8)
    assert run(tmp_path / "hf", ["json"], "--format", "hf", "--hf-data-files", str(src)) == 0
    assert run(tmp_path / "plain", [src]) == 0
    a, b = read_chunks(tmp_path / "hf"), read_chunks(tmp_path / "plain")
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_missing_hub_dataset_offline_gives_one_clear_sentence(tmp_path, capsys):
    assert run(tmp_path / "out", ["no-such-org/no-such-dataset"], "--format", "hf") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(ERR + "could not load the Hugging Face dataset 'no-such-org/no-such-dataset'")
    assert "pass a local file or folder" in err and err.count("\n") == 0


def test_the_checkout_script_is_the_command_with_an_example():
    done = subprocess.run(
        [sys.executable, "data_prep/prepare_corpus.py", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.startswith("usage: data_prep/prepare_corpus.py")
    assert "example:" in done.stdout and "--decontaminate" in done.stdout and "--force" in done.stdout


# ------------------------------------------------------------------ inputs a user gets wrong


def test_a_bom_does_not_cost_the_first_document(tmp_path):
    src, texts = pubmed_slice(tmp_path, 3)
    src.write_bytes(b"\xef\xbb\xbf" + src.read_bytes())
    assert run(tmp_path / "mds", [src]) == 0
    report = json.loads((tmp_path / "mds" / "report.json").read_text())
    assert report["skipped"] == {} and sum(report["documents_written"].values()) == 3


def test_compressed_input_is_refused_not_tokenized_as_text(tmp_path, capsys):
    import gzip

    src, _ = pubmed_slice(tmp_path, 2)
    packed = tmp_path / "pubmed.jsonl.gz"
    packed.write_bytes(gzip.compress(src.read_bytes()))
    for extra in ([], ["--format", "jsonl"]):
        assert run(tmp_path / "mds", [packed], *extra) == 1
        assert f"{packed} is compressed; decompress it first" in capsys.readouterr().err
    assert not (tmp_path / "mds").exists()


def test_a_decontamination_set_that_yields_nothing_is_an_error(tmp_path, capsys):
    src, _ = pubmed_slice(tmp_path, 2)
    eval_set = tmp_path / "test.jsonl"
    eval_set.write_text(
        json.dumps({"text": "Aspirin caused a severe rash in this patient.", "label": 1}) + "\n"
    )
    assert (
        run(tmp_path / "mds", [src], "--decontaminate", str(eval_set), "--decontaminate-field", "sentence")
        == 1
    )
    assert (
        "has no column 'sentence'; its columns are: 'text', 'label' (choose one with --decontaminate-field)"
        in capsys.readouterr().err
    )
    assert (
        run(tmp_path / "mds", [src], "--decontaminate", str(eval_set), "--decontaminate-min-words", "20") == 1
    )
    assert "none of the 1 decontamination sentences has 20 or more words" in capsys.readouterr().err
    eval_set.write_bytes(b"caf\xe9 au lait\n")
    eval_set.rename(tmp_path / "test.txt")
    assert run(tmp_path / "mds", [src], "--decontaminate", str(tmp_path / "test.txt")) == 1
    assert f"{tmp_path / 'test.txt'}:1 is not UTF-8 (byte 0xe9 at column 4)" in capsys.readouterr().err
    assert not (tmp_path / "mds").exists()


def test_bad_arguments_and_a_wrong_tokenizer_file_fail_before_any_work(tmp_path, capsys):
    src, _ = pubmed_slice(tmp_path, 2)
    for length in ("2", "-5"):
        assert run(tmp_path / "mds", [src], "--max-length", length) == 1
        assert "--max-length must leave room for [CLS], [SEP] and a token" in capsys.readouterr().err
    assert run(tmp_path / "mds", [src], "--tokenizer", str(src)) == 1
    assert capsys.readouterr().err.startswith(ERR + f"{src} is not a tokenizers tokenizer.json")
    assert not (tmp_path / "mds").exists()
