"""`modernenc fetch-data` against local stand-ins of each hub source, and how the quickstart finds its data.

The stand-ins are laid out as the hub serves the pinned files (parquet/JSONL at the same repository paths)
and are read through the same `datasets.load_dataset` calls (`--mirror`). The ADE stand-in is what the
hub's own loading script made of the original files, rebuilt here from `../shared/data`, so the fetched
files can be checked against the originals: an independent truth.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import SHARED_DATA, cli_error, run_cli

from modernenc.data.corpus import read_jsonl, read_wikiextractor
from modernenc.pv import bundled_data, fetch_data
from modernenc.pv import quickstart as chain
from modernenc.pv.data_manifest import MANIFEST, describe
from modernenc.pv.fetch_data import SOURCES, Sizes
from modernenc.pv.results import format_table

ADE = SHARED_DATA / "ade_corpus_v2"
ERR = "modernenc fetch-data: error: "
ADE_SENTENCE = (  # an ADE-NEG.txt sentence, planted in a PubMed stand-in abstract to be decontaminated
    "BACKGROUND: External beam radiation therapy often is avoided in the treatment of rhabdomyosarcoma (RMS) "
    "in young children because of the long-term sequelae."
)


# --- the stand-ins ----------------------------------------------------------------------------------------


def _parquet(path: Path, columns: dict, features) -> None:
    import datasets

    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(columns, features=features).to_parquet(str(path))


def _ade_standin(repo: Path) -> None:
    """The hub's three ADE configs as its loading script built them from the original files."""
    from datasets import ClassLabel, Features, Sequence, Value

    rel = (ADE / "DRUG-AE.rel").read_text(encoding="utf-8").splitlines()
    dose = (ADE / "DRUG-DOSE.rel").read_text(encoding="utf-8").splitlines()
    neg = (ADE / "ADE-NEG.txt").read_text(encoding="utf-8").splitlines()
    texts = [line.strip().split("|")[1] for line in rel] + [
        " ".join(line.strip().split(" ")[2:]) for line in neg
    ]
    labels = [1] * len(rel) + [0] * len(neg)
    _parquet(
        repo / "Ade_corpus_v2_classification/train-00000-of-00001.parquet",
        {"text": texts, "label": labels},
        Features({"text": Value("string"), "label": ClassLabel(names=["Not-Related", "Related"])}),
    )
    span = Sequence({"start_char": Value("int32"), "end_char": Value("int32")})
    for lines, other, path in (
        (rel, "effect", "Ade_corpus_v2_drug_ade_relation/train-00000-of-00001.parquet"),
        (dose, "dosage", "Ade_corpus_v2_drug_dosage_relation/train-00000-of-00001.parquet"),
    ):
        columns = {"text": [], "drug": [], other: [], "indexes": []}
        for line in lines:
            value = line.strip().split("|")
            text, entity, drug = value[1], value[2], value[5]
            columns["text"].append(text)
            columns["drug"].append(drug)
            columns[other].append(entity)
            matches = {  # the script's regex matches; the fetch does not rely on them
                key: [{"start_char": m.start(), "end_char": m.end()} for m in re.finditer(re.escape(v), text)]
                for key, v in (("drug", drug), (other, entity))
            }
            columns["indexes"].append(
                {k: {f: [m[f] for m in v] for f in ("start_char", "end_char")} for k, v in matches.items()}
            )
        features = Features(
            {
                "text": Value("string"),
                "drug": Value("string"),
                other: Value("string"),
                "indexes": {"drug": span, other: span},
            }
        )
        _parquet(repo / path, columns, features)


def wiki_doc_id(doc) -> str:
    """The <doc id=...> of a WikiExtractor document; its Document.id is 'path:line (doc id ID)'."""
    return re.fullmatch(r".*:\d+ \(doc id (.*)\)", doc.id).group(1)


def _wiki_rows() -> list[dict]:
    rows = []
    for doc in read_wikiextractor(SHARED_DATA / "wikipedia_en" / "AA" / "wiki_00"):
        title, _, text = doc.text.partition("\n\n")
        rows.append({"id": wiki_doc_id(doc), "title": title, "text": text})
        if len(rows) == 6:
            break
    rows.insert(2, {"id": "999", "title": "Empty", "text": "  \n"})  # no text: skipped
    rows.insert(
        3, {"id": "1000", "title": 'Quotes "and" <angles> & more', "text": "A title the tag escapes."}
    )
    for row in rows:
        row["url"] = "https://en.wikipedia.org/wiki/" + row["title"].replace(" ", "_")
    return rows


def _pubmed_rows() -> list[dict]:
    rows = []
    for line in (SHARED_DATA / "pubmed" / "pubmed_000.jsonl").read_text(encoding="utf-8").splitlines()[:12]:
        record = json.loads(line)
        title, _, abstract = record["text"].partition("\n")
        rows.append({"PMID": 1000 + len(rows), "title": title, "content": abstract})
    rows.append({"PMID": 5, "title": "Short", "content": "Too short to keep."})
    rows.append({**rows[0], "PMID": 6})  # the same text under another PMID: a duplicate
    rows.append({**rows[1], "content": rows[1]["content"] + " More."})  # the same PMID: a duplicate
    rows.append({"PMID": 7, "title": "Contaminated", "content": f"{ADE_SENTENCE}" + " Filler text." * 20})
    for i, row in enumerate(rows):
        row["id"] = f"pubmed23n0001_{i}"
        row["contents"] = f"{row['title']} {row['content']}"
    return rows


def build_mirror(root: Path) -> Path:
    """Local copies of every source in SOURCES: `root/<owner>/<name>/<the pinned files>`."""
    from datasets import Features, Value

    _ade_standin(root / fetch_data.ADE_REPO)
    wiki = _wiki_rows()
    _parquet(
        root / "wikimedia/wikipedia/20231101.en/train-00000-of-00041.parquet",
        {key: [row[key] for row in wiki] for key in ("id", "url", "title", "text")},
        Features({key: Value("string") for key in ("id", "url", "title", "text")}),
    )
    pubmed = root / "MedRAG/pubmed/chunk/pubmed23n0001.jsonl"
    pubmed.parent.mkdir(parents=True)
    pubmed.write_text("".join(json.dumps(row) + "\n" for row in _pubmed_rows()), encoding="utf-8")
    tokenizer = root / "answerdotai/ModernBERT-base"
    tokenizer.mkdir(parents=True)
    for name in SOURCES["tokenizer"].files:
        shutil.copy(SHARED_DATA / "tokenizers" / "modernbert" / name, tokenizer / name)
    return root


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> Path:
    return build_mirror(tmp_path_factory.mktemp("hub"))


@pytest.fixture(scope="module")
def fetched(mirror, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fetch") / "data"
    assert run_cli("fetch-data", "--mirror", mirror, "--out", out, "--no-progress") == 0
    return out


def copy_of(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / "copy"))


def files_under(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def sha256sum_digest(folder: Path) -> str:
    """The folder digest by coreutils, as data_manifest's docstring gives it: no Python in the loop."""
    command = (
        "find . -type f ! -path ./manifest.json ! -path '*/.*' -printf '%P\\0' | LC_ALL=C sort -z | "
        "xargs -0 sha256sum | sha256sum"
    )
    return subprocess.run(
        ["bash", "-c", command], cwd=folder, capture_output=True, text=True, check=True
    ).stdout.split()[0]


# --- the layout and the manifest --------------------------------------------------------------------------


def test_fetch_writes_the_shared_layout_with_a_manifest_of_every_file(fetched):
    def layout(folder: Path) -> set[str]:
        return {p.relative_to(folder).as_posix() for p in folder.iterdir() if p.is_dir()} | {
            p.relative_to(folder).as_posix() for p in (folder / "tokenizers").iterdir()
        }

    assert layout(fetched) == layout(SHARED_DATA)
    for name in ("DRUG-AE.rel", "DRUG-DOSE.rel", "ADE-NEG.txt"):
        assert (fetched / "ade_corpus_v2" / name).is_file()
    assert sorted(p.name for p in (fetched / "wikipedia_en" / "AA").iterdir()) == ["wiki_00"]
    assert sorted(p.name for p in (fetched / "pubmed").glob("*.jsonl")) == ["pubmed_000.jsonl"]
    for name in SOURCES["tokenizer"].files:  # byte-for-byte what the source holds
        assert (fetched / "tokenizers/modernbert" / name).read_bytes() == (
            SHARED_DATA / "tokenizers/modernbert" / name
        ).read_bytes()

    manifest = json.loads((fetched / MANIFEST).read_text())
    on_disk = {path: data for path, data in files_under(fetched).items() if path != MANIFEST}
    assert set(manifest["files"]) == set(on_disk)
    for path, data in on_disk.items():
        assert manifest["files"][path] == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert manifest["digest"] == sha256sum_digest(fetched)
    for name, source in SOURCES.items():
        recorded = manifest["sources"][name]
        assert recorded["pinned"] == {
            "repo": source.repo,
            "repo_type": source.repo_type,
            "revision": source.revision,
            "files": list(source.files),
        }
        assert recorded["commit"] is None  # a local copy: no commit is claimed
    assert manifest["folders"]["ade_corpus_v2"]["counts"] == {
        "DRUG-AE.rel": 6821,
        "DRUG-DOSE.rel": 279,
        "ADE-NEG.txt": 16695,
    }
    assert manifest["folders"]["wikipedia_en"]["counts"]["articles"] == 7
    assert manifest["folders"]["pubmed"]["counts"] == {
        "abstracts": 13,
        "files": 1,
        "skipped_short": 1,
        "skipped_duplicate": 2,
    }
    readme = (fetched / "ade_corpus_v2" / "README.md").read_text()
    assert "PMID column is 0" in readme and "first occurrence in the sentence" in readme


def test_ade_files_carry_the_original_sentences_entities_and_order(fetched):
    def columns(path: Path) -> list[list[str]]:
        return [line.split("|") for line in path.read_text(encoding="utf-8").splitlines()]

    for name in ("DRUG-AE.rel", "DRUG-DOSE.rel"):
        original, ours = columns(ADE / name), columns(fetched / "ade_corpus_v2" / name)
        assert len(ours) == len(original)
        for orig, row in zip(original, ours, strict=True):
            assert row[0] == "0" and [row[1], row[2], row[5]] == [orig[1], orig[2], orig[5]]
            sentence = row[1]
            assert sentence[int(row[3]) : int(row[4])] == row[2]  # offsets relative to the sentence
            assert sentence[int(row[6]) : int(row[7])] == row[5]
            assert int(row[4]) - int(row[3]) == int(orig[4]) - int(orig[3])  # same span length as annotated
    original = [line.split(" ", 2)[2] for line in (ADE / "ADE-NEG.txt").read_text().splitlines()]
    ours = (fetched / "ade_corpus_v2" / "ADE-NEG.txt").read_text().splitlines()
    assert ours == [f"0 NEG {sentence}" for sentence in original]


def test_prepare_ade_on_the_fetched_corpus_gives_the_published_split_byte_for_byte(fetched, tmp_path):
    assert run_cli("prepare-ade", "--source", ADE, "--out", tmp_path / "original") == 0
    assert run_cli("prepare-ade", "--source", fetched / "ade_corpus_v2", "--out", tmp_path / "fetched") == 0
    for split in ("train", "validation", "test"):
        assert (tmp_path / "fetched" / f"{split}.jsonl").read_bytes() == (
            tmp_path / "original" / f"{split}.jsonl"
        ).read_bytes()


def test_wikipedia_is_wikiextractor_format_the_reader_takes(fetched):
    docs = [
        doc for path in sorted((fetched / "wikipedia_en").rglob("wiki_*")) for doc in read_wikiextractor(path)
    ]
    kept = [row for row in _wiki_rows() if row["text"].strip()]
    assert [wiki_doc_id(d) for d in docs] == [row["id"] for row in kept]
    assert [d.text for d in docs] == [f"{row['title']}\n\n{row['text'].strip()}" for row in kept]
    assert all(d.skip_reason is None for d in docs)
    header = next(
        line for line in (fetched / "wikipedia_en/AA/wiki_00").read_text().splitlines() if 'id="1000"' in line
    )
    assert 'title="Quotes &quot;and&quot; &lt;angles&gt; &amp; more"' in header


def test_wikipedia_and_pubmed_stop_at_the_wanted_size_and_roll_files(mirror, tmp_path, monkeypatch):
    monkeypatch.setattr(fetch_data, "WIKI_FILE_BYTES", 20_000)  # the articles run to tens of kB each
    fetch_data.fetch_data(
        tmp_path / "small",
        mirror=mirror,
        progress=False,
        sizes=Sizes(wikipedia_articles=3, pubmed_abstracts=2),
    )
    files = sorted((tmp_path / "small" / "wikipedia_en").rglob("wiki_*"))
    docs = [doc for path in files for doc in read_wikiextractor(path)]
    assert len(docs) == 3 and len(files) > 1
    assert [p.relative_to(tmp_path / "small" / "wikipedia_en").as_posix() for p in files] == [
        f"AA/wiki_{i:02d}" for i in range(len(files))
    ]
    assert len(list(read_jsonl(tmp_path / "small" / "pubmed" / "pubmed_000.jsonl"))) == 2


def test_rolling_files_start_a_new_file_when_the_next_record_would_pass_the_limit(tmp_path):
    files = fetch_data.RollingFiles(tmp_path, lambda i: f"f{i}", max_bytes=25)
    for record in (b"a" * 10, b"b" * 10, b"c" * 10, b"d" * 30, b"e" * 5):
        files.write(record)
    files.close()
    assert [p.read_bytes() for p in files.paths] == [b"a" * 10 + b"b" * 10, b"c" * 10, b"d" * 30, b"e" * 5]


def test_wikiextractor_names_follow_its_folders():
    names = [fetch_data.wikiextractor_name(i) for i in (0, 99, 100, 2599, 2600)]
    assert names == ["AA/wiki_00", "AA/wiki_99", "AB/wiki_00", "AZ/wiki_99", "BA/wiki_00"]


def test_pubmed_records_keep_pmid_title_and_abstract(fetched):
    records = [
        json.loads(line) for line in (fetched / "pubmed" / "pubmed_000.jsonl").read_text().splitlines()
    ]
    source = [row for row in _pubmed_rows() if row["PMID"] not in (5, 6)]
    source = [row for row in source if not (row["PMID"] == 1001 and row["content"].endswith(" More."))]
    assert records == [
        {"text": f"{row['title']}\n{row['content']}", "pmid": str(row["PMID"]), "source": "medrag_pubmed"}
        for row in source
    ]


def prepare(fetched: Path, out: Path, *args) -> int:
    tokenizer = fetched / "tokenizers" / "modernbert"
    return run_cli("prepare-data", *args, "--tokenizer", tokenizer, "--output", out, "--no-progress")


def test_the_project_tokenizes_the_fetched_corpora_and_decontaminates_with_the_fetched_ade(
    fetched, tmp_path, capsys
):
    capsys.readouterr()
    wiki = ["--input", fetched / "wikipedia_en", "--format", "wikiextractor"]
    assert prepare(fetched, tmp_path / "wiki", *wiki) == 0
    assert "documents read      7" in capsys.readouterr().out
    assert (tmp_path / "wiki" / "train" / "index.json").is_file()
    pubmed = [
        "--input",
        fetched / "pubmed",
        "--format",
        "jsonl",
        "--decontaminate",
        fetched / "ade_corpus_v2",
    ]
    assert prepare(fetched, tmp_path / "pubmed", *pubmed) == 0
    out = capsys.readouterr().out
    assert "documents read      13" in out
    # The planted abstract holds an ADE-NEG.txt sentence: the fetched corpus works as the decontamination set.
    assert re.search(r"decontamination\s+dropped 1 documents", out), out


# --- second runs, corruption, refusals --------------------------------------------------------------------


def test_a_second_run_verifies_and_does_nothing_without_the_hub(fetched, monkeypatch, capsys):
    before = {p: p.stat().st_mtime_ns for p in fetched.rglob("*")}

    def no_hub(*args, **kwargs):
        raise AssertionError("a verified folder must not reach for its sources")

    monkeypatch.setattr(fetch_data, "resolve_source", no_hub)
    monkeypatch.setattr("modernenc.utils.hub.hub_reachable", no_hub)
    capsys.readouterr()
    assert run_cli("fetch-data", "--out", fetched) == 0
    out = capsys.readouterr().out
    assert "files match manifest.json" in out and "nothing to do" in out
    assert {p: p.stat().st_mtime_ns for p in fetched.rglob("*")} == before


def test_a_corrupted_file_is_refused_by_name_and_force_fetches_again(fetched, mirror, tmp_path, capsys):
    folder = copy_of(fetched, tmp_path)
    wiki = folder / "wikipedia_en" / "AA" / "wiki_00"
    corrupted = wiki.read_bytes().replace(b"Anarchism", b"Anarchisn", 1)
    wiki.write_bytes(corrupted)
    err = cli_error(capsys, "fetch-data", "--out", folder)
    assert err.startswith(ERR + f"{wiki} does not match {folder / MANIFEST}")
    assert f"modernenc fetch-data --out {folder} --force" in err
    assert wiki.read_bytes() == corrupted  # refused, not repaired behind the user's back
    assert run_cli("fetch-data", "--out", folder, "--mirror", mirror, "--force", "--no-progress") == 0
    assert wiki.read_bytes() == (fetched / "wikipedia_en" / "AA" / "wiki_00").read_bytes()
    assert not list(tmp_path.glob(".*"))  # no staging or replaced folder left behind


def test_a_missing_file_is_refused(fetched, tmp_path, capsys):
    folder = copy_of(fetched, tmp_path)
    (folder / "pubmed" / "pubmed_000.jsonl").unlink()
    err = cli_error(capsys, "fetch-data", "--out", folder)
    assert "pubmed_000.jsonl is listed in" in err and "but missing" in err


def test_a_folder_fetched_from_other_pins_asks_for_force(fetched, tmp_path, monkeypatch, capsys):
    folder = copy_of(fetched, tmp_path)
    changed = {
        **SOURCES,
        "pubmed": fetch_data.HubSource("MedRAG/pubmed", "a" * 40, ("chunk/pubmed23n0002.jsonl",)),
    }
    monkeypatch.setattr(fetch_data, "SOURCES", changed)
    err = cli_error(capsys, "fetch-data", "--out", folder)
    assert (
        err
        == ERR
        + f"{folder} was fetched from other sources than this modernenc pins (pubmed); pass --force to fetch "
        "them again"
    )


def test_force_refetches_but_never_replaces_a_file_put_in_beside_the_fetch(fetched, mirror, tmp_path, capsys):
    folder = copy_of(fetched, tmp_path)
    (folder / "pubmed" / "my_notes.txt").write_text("keep me")
    err = cli_error(capsys, "fetch-data", "--out", folder, "--mirror", mirror, "--force")
    assert f"{folder} holds files fetch-data did not write: pubmed/my_notes.txt; refusing" in err
    assert (folder / "pubmed" / "my_notes.txt").read_text() == "keep me"


def test_a_folder_that_is_not_a_fetch_is_never_touched(mirror, tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    err = cli_error(capsys, "fetch-data", "--out", tmp_path / "mine", "--mirror", mirror, "--force")
    assert "holds no manifest.json, so it is no folder modernenc fetched" in err
    assert files_under(tmp_path / "mine") == {"notes.txt": b"keep me"}


def test_a_failed_fetch_leaves_nothing_behind(mirror, tmp_path, capsys):
    broken = Path(shutil.copytree(mirror, tmp_path / "hub"))
    (broken / "MedRAG/pubmed/chunk/pubmed23n0001.jsonl").unlink()
    err = cli_error(capsys, "fetch-data", "--out", tmp_path / "out", "--mirror", broken, "--no-progress")
    assert err.startswith(ERR + "reading MedRAG/pubmed (chunk/pubmed23n0001.jsonl) failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hub"]


def test_offline_fetch_fails_with_one_sentence_naming_both_ways(tmp_path, monkeypatch, capsys):
    import datasets
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    err = cli_error(capsys, "fetch-data", "--out", tmp_path / "data")
    assert err == (
        ERR + "the Hugging Face hub is unreachable (offline), so nothing can be fetched; run `modernenc "
        "fetch-data` where the hub is reachable (or with --mirror DIR, local copies of the repositories), or "
        "set MODERNENC_SHARED_DATA to an existing copy of the data folder"
    )
    assert not (tmp_path / "data").exists()


def test_an_unreachable_hub_is_detected_without_the_offline_flags(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("modernenc.utils.hub.hub_reachable", lambda: False)
    err = cli_error(capsys, "fetch-data", "--out", tmp_path / "data")
    assert "the Hugging Face hub is unreachable (offline)" in err
    assert not (tmp_path / "data").exists()


# --- where the quickstart finds its data ------------------------------------------------------------------


@pytest.fixture
def nowhere(tmp_path, monkeypatch) -> Path:
    """No bundled data anywhere: no variable, no ../shared/data, no checkout beside one, an empty cache."""
    monkeypatch.delenv(bundled_data.ENV_VAR, raising=False)
    monkeypatch.setattr(bundled_data, "SOURCE_CHECKOUT", None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    work = tmp_path / "a" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    return tmp_path


def test_data_is_found_in_order_variable_shared_checkout_then_cache(nowhere, fetched, monkeypatch):
    with pytest.raises(bundled_data.DataNotFound):
        bundled_data.shared_data_dir()
    cache = nowhere / "cache" / "modernenc" / "data"
    assert bundled_data.user_data_dir() == cache
    cache.mkdir(parents=True)
    with pytest.raises(bundled_data.DataNotFound):  # a cache folder without a manifest is no fetch
        bundled_data.shared_data_dir()
    shutil.copy(fetched / MANIFEST, cache / MANIFEST)
    assert bundled_data.shared_data_dir() == cache
    checkout = nowhere / "checkout"
    (nowhere / "shared" / "data").mkdir(parents=True)
    monkeypatch.setattr(bundled_data, "SOURCE_CHECKOUT", checkout)
    assert bundled_data.shared_data_dir() == nowhere / "shared" / "data"
    (nowhere / "a" / "shared" / "data").mkdir(parents=True)  # ../shared/data from the working directory
    assert bundled_data.shared_data_dir() == (nowhere / "a" / "shared" / "data").resolve()
    monkeypatch.setenv(bundled_data.ENV_VAR, str(fetched))
    assert bundled_data.shared_data_dir() == fetched


def test_xdg_cache_home_must_be_absolute_to_count(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    assert bundled_data.user_data_dir() == tmp_path / ".cache" / "modernenc" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert bundled_data.user_data_dir() == tmp_path / ".cache" / "modernenc" / "data"


def test_quickstart_without_data_fetches_it_into_the_cache_first_and_says_so(
    nowhere, mirror, monkeypatch, capsys
):
    real = fetch_data.resolve_source
    monkeypatch.setattr(fetch_data, "resolve_source", lambda source, _: real(source, mirror))
    monkeypatch.setattr("modernenc.utils.hub.hub_reachable", lambda: True)
    capsys.readouterr()
    chain.run_chain(nowhere / "results.md", only=[])
    cache = nowhere / "cache" / "modernenc" / "data"
    assert (
        f"no bundled data found: fetching it from the Hugging Face hub into {cache} first"
        in capsys.readouterr().out
    )
    assert (cache / MANIFEST).is_file() and bundled_data.shared_data_dir() == cache
    stage = next(s for s in chain.stages(Path("results.md")) if s.name == "prepare-ade")
    assert str(cache / "ade_corpus_v2") in stage.command
    chain.run_chain(nowhere / "results.md", only=[])  # found now: no second fetch
    assert "fetching" not in capsys.readouterr().out


def test_quickstart_offline_without_data_fails_in_one_sentence_naming_both_ways(nowhere, monkeypatch, capsys):
    monkeypatch.setattr("modernenc.utils.hub.hub_reachable", lambda: False)
    err = cli_error(capsys, "quickstart", "--out", nowhere / "results.md")
    cache = nowhere / "cache" / "modernenc" / "data"
    assert err == (
        "modernenc quickstart: error: no bundled data found ($MODERNENC_SHARED_DATA is unset, no "
        f"../shared/data, nothing fetched in {cache}); set MODERNENC_SHARED_DATA to a copy of the data "
        "folder, or run `modernenc fetch-data` where the Hugging Face hub is reachable; the Hugging Face hub "
        "is unreachable (offline), so it cannot be fetched from here"
    )
    assert sorted(p.name for p in Path.cwd().iterdir()) == []  # no stage ran


def test_quickstart_refuses_a_fetched_folder_that_changed(nowhere, fetched, monkeypatch, capsys):
    folder = copy_of(fetched, nowhere)
    (folder / "ade_corpus_v2" / "ADE-NEG.txt").write_text("0 NEG Not the corpus.\n")
    monkeypatch.setenv(bundled_data.ENV_VAR, str(folder))
    err = cli_error(capsys, "quickstart", "--out", nowhere / "results.md")
    assert f"{folder / 'ade_corpus_v2' / 'ADE-NEG.txt'} does not match" in err


def test_quickstart_help_works_with_no_data_anywhere(nowhere, capsys):
    assert run_cli("quickstart", "--help") == 0
    assert "prepare-wikipedia" in capsys.readouterr().out


# --- the results table names its data ---------------------------------------------------------------------


def _row() -> dict:
    metrics = {"threshold": 0.5, "f1": 0.9, "precision": 0.9, "recall": 0.9, "auroc": 0.95}
    return {
        "results": dict.fromkeys(("default", "max_f1", "target_recall"), metrics),
        "examples_per_s": 100.0,
    }


def test_results_table_names_the_manifest_digest_or_the_same_digest_of_a_folder_without_one(
    fetched, tmp_path
):
    manifest = json.loads((fetched / MANIFEST).read_text())
    table = format_table({"model": _row()}, data=describe(fetched))
    line = next(line for line in table.splitlines() if line.startswith("Data: "))
    assert line == (
        f"Data: `{fetched.resolve()}`, manifest digest sha256:{manifest['digest']} "
        f"({len(manifest['files'])} files)."
    )
    bare = copy_of(fetched, tmp_path)
    (bare / MANIFEST).unlink()  # as ../shared/data: no manifest, the same files
    line = next(
        line for line in format_table({"m": _row()}, data=describe(bare)).splitlines() if "Data: " in line
    )
    assert line.endswith(f"sha256:{manifest['digest']}.") and "no manifest" in line
    assert sha256sum_digest(SHARED_DATA) in describe(SHARED_DATA)


def test_hub_sources_resolve_to_their_commit_through_huggingface_hub(monkeypatch):
    """The URL `datasets` and fsspec read: hf://datasets/<repo>@<commit>/<file> (models without datasets/)."""
    import huggingface_hub

    asked = []

    def repo_info(self, repo_id, repo_type=None, revision=None):
        asked.append((repo_id, repo_type, revision))
        if revision == "nope":
            raise huggingface_hub.errors.RevisionNotFoundError("Invalid rev id: nope")
        return huggingface_hub.hf_api.DatasetInfo(id=repo_id, sha="c" * 40)

    monkeypatch.setattr(huggingface_hub.HfApi, "repo_info", repo_info)
    ade = fetch_data.resolve_source(SOURCES["ade_drug_effect"], None)
    assert ade.commit == "c" * 40
    assert ade.url(SOURCES["ade_drug_effect"].files[0]) == (
        f"hf://datasets/ade-benchmark-corpus/ade_corpus_v2@{'c' * 40}/"
        "Ade_corpus_v2_drug_ade_relation/train-00000-of-00001.parquet"
    )
    assert fetch_data.resolve_source(SOURCES["tokenizer"], None).url("tokenizer.json") == (
        f"hf://answerdotai/ModernBERT-base@{'c' * 40}/tokenizer.json"
    )
    assert asked == [
        ("ade-benchmark-corpus/ade_corpus_v2", "dataset", fetch_data.ADE_REVISION),
        ("answerdotai/ModernBERT-base", "model", SOURCES["tokenizer"].revision),
    ]
    with pytest.raises(
        RuntimeError, match="cannot find MedRAG/pubmed at revision nope on the Hugging Face hub"
    ):
        fetch_data.resolve_source(fetch_data.HubSource("MedRAG/pubmed", "nope", ("x.jsonl",)), None)


def test_only_the_sources_without_a_commit_sha_are_unpinned():
    assert {name for name, source in SOURCES.items() if not source.pinned} == {"pubmed"}
