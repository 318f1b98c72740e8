"""Tokenizer training: HF-format output that AutoTokenizer loads, ModernBERT specials, padded vocabulary."""

import json
from pathlib import Path

import pytest
from conftest import run_cli

from modernenc.pv.bundled_data import shared_data_dir

ROOT = Path(__file__).resolve().parents[1]
WIKI = shared_data_dir() / "wikipedia_en" / "AA" / "wiki_01"


def train(argv: list[str]) -> int:
    return run_cli("train-tokenizer", *argv)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tok")
    raw = WIKI.read_bytes()
    (root / "wiki_01").write_bytes(raw[: raw.index(b"</doc>", 300_000) + 7])
    out = root / "out"
    assert (
        train(
            ["--input", str(root / "wiki_01"), "--vocab-size", "600", "--output", str(out), "--no-progress"]
        )
        == 0
    )
    return out


def test_files_and_autotokenizer_round_trip(trained):
    from transformers import AutoTokenizer

    assert {p.name for p in trained.iterdir()} >= {
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    }
    tok = AutoTokenizer.from_pretrained(str(trained))
    assert len(tok) == 640  # 600 trained (incl. 5 specials) padded up to a multiple of 64
    for name in ("cls", "sep", "pad", "mask", "unk"):
        assert getattr(tok, f"{name}_token") == f"[{name.upper()}]"
    text = "Anarchism — naïve café 東京 (1840s): 3.5% of e-mails."
    ids = tok(text).input_ids
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert tok.unk_token_id not in ids  # byte-level alphabet covers any input
    assert tok.decode(ids[1:-1]) == text
    pair = tok("first", "second").input_ids
    assert pair.count(tok.sep_token_id) == 2 and pair[0] == tok.cls_token_id


def test_unused_padding_and_masker_vocabulary(trained):
    from modernenc.data.masking import MLMMasker, load_tokenizer

    tok = load_tokenizer(trained)
    added = json.loads((trained / "tokenizer.json").read_text())["added_tokens"]
    unused = [t for t in added if t["content"].startswith("[unused")]
    assert len(unused) == 40 and not any(t["special"] for t in unused)
    masker = MLMMasker.from_tokenizer(tok)
    assert masker.mask_token_id == tok.token_to_id("[MASK]")
    assert len(masker.random_ids) == 640 - 5 - 40
    config = json.loads((trained / "tokenizer_config.json").read_text())
    assert config["model_max_length"] == 8192
    special_map = json.loads((trained / "special_tokens_map.json").read_text())
    assert special_map["mask_token"]["lstrip"] is True


def test_existing_output_needs_force(trained, capsys):
    argv = ["--input", str(WIKI), "--vocab-size", "600", "--output", str(trained), "--no-progress"]
    assert train(argv) == 1
    assert "--force" in capsys.readouterr().err


def test_bad_input_is_refused_and_nothing_is_written(tmp_path, capsys):
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"body": "Rash after amoxicillin."}\n{"body": "Nausea on metformin."}\n')
    out = tmp_path / "out"
    common = ["--vocab-size", "600", "--no-progress"]
    assert train(["--input", str(docs), "--output", str(out), *common]) == 1  # no "text" field anywhere
    err = capsys.readouterr().err
    assert "no document had text to train on (" in err and "check --format and --text-field" in err
    assert not out.exists()
    assert train(["--input", str(docs), "--output", str(out), "--min-frequency", "-1", *common]) == 1
    assert "--min-frequency must be at least 1" in capsys.readouterr().err
    docs_file_as_output = ["--input", str(docs), "--text-field", "body", "--output", str(docs), *common]
    assert train(docs_file_as_output) == 1
    assert f"--output folder {docs} is a file" in capsys.readouterr().err


def test_decontaminate_keeps_held_out_documents_out_of_the_vocabulary(tmp_path, capsys):
    """A document holding a held-out sentence is not read: its rare word does not become a token."""
    held_out = "Zorbaxiphene induced severe agranulocytosis in two elderly patients."
    docs = [f"Document {i} talks about the weather and the harvest of the year." for i in range(50)]
    docs += [f"A report. {held_out} The end."] * 20  # frequent enough to be merged into tokens
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    (tmp_path / "held_out.txt").write_text(held_out + "\n")
    common = ["--input", str(corpus), "--vocab-size", "400", "--no-progress"]
    assert train([*common, "--output", str(tmp_path / "all")]) == 0
    capsys.readouterr()
    assert (
        train(
            [*common, "--output", str(tmp_path / "clean"), "--decontaminate", str(tmp_path / "held_out.txt")]
        )
        == 0
    )
    assert "contains an evaluation sentence (--decontaminate): 20" in capsys.readouterr().out
    vocab = {
        name: json.loads((tmp_path / name / "tokenizer.json").read_text())["model"]["vocab"]
        for name in ("all", "clean")
    }
    assert any("Zorb" in token for token in vocab["all"])
    assert not any("Zorb" in token for token in vocab["clean"])


def test_the_output_is_checked_before_training(tmp_path, capsys, monkeypatch):
    """Training takes minutes on a real corpus; an output that cannot be written must fail first."""
    import modernenc.data.tokenizer_training as training

    trained = []
    monkeypatch.setattr(training, "train_bpe", lambda *a, **k: trained.append(1))
    docs = tmp_path / "docs.txt"
    docs.write_text("Rash after amoxicillin.\n")
    (tmp_path / "afile").write_text("a file")
    common = ["--input", str(docs), "--vocab-size", "600", "--no-progress"]
    assert train([*common, "--output", str(tmp_path / "afile" / "tok")]) == 1
    assert f"{tmp_path / 'afile'} is a file, not a folder" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "tokenizer.json").write_text("the user's")
    assert train([*common, "--output", str(tmp_path / "mine"), "--force"]) == 1
    assert "is not a tokenizer (train-tokenizer) modernenc wrote" in capsys.readouterr().err
    assert trained == [] and (tmp_path / "mine" / "tokenizer.json").read_text() == "the user's"
