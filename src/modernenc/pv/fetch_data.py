"""`modernenc fetch-data`: build the bundled data folder from Hugging Face hub sources, pinned and checked.

The folder has the layout of `../shared/data` (docs/data.md), so every reader and the quickstart take it
unchanged:

    ade_corpus_v2/           DRUG-AE.rel, DRUG-DOSE.rel, ADE-NEG.txt  <- ade-benchmark-corpus/ade_corpus_v2
    wikipedia_en/AA/wiki_NN  2,000 articles, WikiExtractor format     <- wikimedia/wikipedia, 20231101.en
    pubmed/pubmed_NNN.jsonl  8,500 titles+abstracts as JSONL          <- MedRAG/pubmed
    tokenizers/modernbert/   tokenizer.json, tokenizer_config.json, special_tokens_map.json
                                                                      <- answerdotai/ModernBERT-base
    manifest.json            sources, revisions, counts, SHA-256 per file (written last)

Each source names the exact files it reads at one revision; datasets are streamed
(`datasets.load_dataset(..., streaming=True)`), so 2,000 articles of a 20 GB dump cost the parquet row
groups that hold them, not the dump. The
folder is built beside its destination under a hidden name and moved into place when complete: an
interrupted fetch leaves nothing where the quickstart looks. A second run checks every file against the
manifest and does nothing; a changed file is refused, by name.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from modernenc.pv.bundled_data import ENV_VAR, DataNotFound, shared_data_dir, user_data_dir
from modernenc.pv.data_manifest import MANIFEST, read_manifest, verify, write_manifest


@dataclass(frozen=True)
class HubSource:
    """Files of one hub repository, read at one revision."""

    repo: str
    revision: str  # a commit sha; a branch name only where no sha could be looked up (see SOURCES)
    files: tuple[str, ...]
    repo_type: str = "dataset"

    @property
    def pinned(self) -> bool:
        return re.fullmatch(r"[0-9a-f]{40}", self.revision) is not None


ADE_REPO = "ade-benchmark-corpus/ade_corpus_v2"  # where the hub's `ade_corpus_v2` redirects
ADE_REVISION = "4ba01c71687dd7c996597042449448ea312126cf"
# The one table of sources. The commit shas come from public code that pins these repositories (this table
# was written without hub access); each must still be checked online once (docs/data.md says how).
# MedRAG/pubmed: no pinned sha was found, so it reads `main` and the manifest records the commit `main`
# resolved to; put that sha here to pin it.
SOURCES: dict[str, HubSource] = {
    "ade_classification": HubSource(
        ADE_REPO, ADE_REVISION, ("Ade_corpus_v2_classification/train-00000-of-00001.parquet",)
    ),
    "ade_drug_effect": HubSource(
        ADE_REPO, ADE_REVISION, ("Ade_corpus_v2_drug_ade_relation/train-00000-of-00001.parquet",)
    ),
    "ade_drug_dose": HubSource(
        ADE_REPO, ADE_REVISION, ("Ade_corpus_v2_drug_dosage_relation/train-00000-of-00001.parquet",)
    ),
    "wikipedia": HubSource(
        "wikimedia/wikipedia",
        "b04c8d1ceb2f5cd4588862100d08de323dccfbaa",
        ("20231101.en/train-00000-of-00041.parquet",),
    ),
    "pubmed": HubSource("MedRAG/pubmed", "main", ("chunk/pubmed23n0001.jsonl",)),
    "tokenizer": HubSource(
        "answerdotai/ModernBERT-base",
        "8949b909ec900327062f0ebf497f51aef5e6f0c8",
        ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"),
        repo_type="model",
    ),
}

UNKNOWN_PMID = "0"  # the hub's ADE configs carry no PMIDs; 0 is no PMID (they start at 1) yet parses as one
WIKI_FILE_BYTES = 1 << 20  # WikiExtractor's default `--bytes 1M`
PUBMED_FILE_BYTES = 3_500_000  # the shared folder's files are each under 3.5 MB
MIN_ABSTRACT_CHARS = 200  # as in the shared folder
PUBMED_TAG = "medrag_pubmed"
OFFLINE = "the Hugging Face hub is unreachable (offline)"
ROWS_PER_BATCH = 1000


class HubUnreachable(RuntimeError):
    """The hub cannot be reached and nothing else can provide the data."""


@dataclass(frozen=True)
class Sizes:
    """How much of the two text corpora to take (the ADE corpus and the tokenizer are taken whole)."""

    wikipedia_articles: int = 2000
    pubmed_abstracts: int = 8500


@dataclass(frozen=True)
class Resolved:
    location: str  # where the files are: hf://[datasets/]<repo>@<commit>, or a local copy (--mirror)
    commit: str | None  # the commit read; None for a local copy, whose revision nobody can vouch for

    def url(self, path: str) -> str:
        return f"{self.location}/{path}"


def resolve_source(source: HubSource, mirror: Path | None) -> Resolved:
    """Where a source is read from: its hub repository at the commit its revision names, or a local copy."""
    if mirror is not None:
        local = (mirror / source.repo).resolve()
        if not local.is_dir():
            raise FileNotFoundError(
                f"--mirror {mirror} has no copy of {source.repo} ({local} is not a folder)"
            )
        return Resolved(str(local), None)
    from huggingface_hub import HfApi

    try:
        info = HfApi().repo_info(source.repo, repo_type=source.repo_type, revision=source.revision)
    except Exception as err:  # hub errors come in many types (not found, gated, revision, connection)
        raise RuntimeError(
            f"cannot find {source.repo} at revision {source.revision} on the Hugging Face hub: "
            f"{type(err).__name__}: {err}"
        ) from err
    prefix = "datasets/" if source.repo_type == "dataset" else ""
    return Resolved(f"hf://{prefix}{source.repo}@{info.sha}", info.sha)


# The `datasets` builder for each kind of file. Named files through a packaged builder, rather than a
# repository name: no dataset card, config or loading script stands between the pinned bytes and the rows.
BUILDERS = {".parquet": "parquet", ".jsonl": "json"}


@dataclass
class Reader:
    """Reads the resolved sources: rows through `datasets`, whole files through fsspec (on the hub, its
    `HfFileSystem`, which `datasets` uses too)."""

    sources: dict[str, HubSource]
    resolved: dict[str, Resolved]
    progress: bool

    def rows(self, name: str, desc: str) -> Iterator[dict]:
        import datasets
        from tqdm.auto import tqdm

        source, where = self.sources[name], self.resolved[name]
        try:
            stream = datasets.load_dataset(
                BUILDERS[Path(source.files[0]).suffix],
                data_files=[where.url(path) for path in source.files],
                split="train",
                streaming=True,
            )
            with tqdm(desc=desc, unit=" rows", disable=not self.progress, leave=False) as bar:
                # In batches: row by row, `datasets` rebuilds the arrow schema per row (10x slower).
                for batch in stream.iter(batch_size=ROWS_PER_BATCH):
                    columns = list(batch)
                    bar.update(len(batch[columns[0]]) if columns else 0)
                    for values in zip(*batch.values(), strict=True):
                        yield dict(zip(columns, values, strict=True))
        except Exception as err:  # connection drops, missing files, bad parquet: name the source
            raise RuntimeError(
                f"reading {source.repo} ({', '.join(source.files)}) failed: {type(err).__name__}: {err}"
            ) from err

    def file(self, name: str, path: str) -> bytes:
        import fsspec

        source, where = self.sources[name], self.resolved[name]
        try:
            with fsspec.open(where.url(path), "rb") as f:
                return f.read()
        except Exception as err:
            raise RuntimeError(
                f"reading {path} of {source.repo} failed: {type(err).__name__}: {err}"
            ) from err


@dataclass
class Written:
    """What a folder's writer produced: counts for the manifest and how it differs from the shared copy."""

    counts: dict[str, int]
    notes: list[str] = field(default_factory=list)


# --- ADE corpus --------------------------------------------------------------------------------------------


def _relation_line(row: dict, other: str, where: str) -> str:
    """`PMID|sentence|<other>|begin|end|drug|begin|end`, offsets of each entity's first occurrence."""
    text, value, drug = row["text"], row[other], row["drug"]
    for part in (text, value, drug):
        if "|" in part or "\n" in part or "\r" in part:
            raise ValueError(f"{where}: {part[:80]!r} holds a '|' or a line break, which a .rel line cannot")
    spans = []
    for entity in (value, drug):
        begin = text.find(entity)
        if begin < 0:
            raise ValueError(f"{where}: {entity!r} does not occur in its sentence {text[:80]!r}")
        spans += [begin, begin + len(entity)]
    return f"{UNKNOWN_PMID}|{text}|{value}|{spans[0]}|{spans[1]}|{drug}|{spans[2]}|{spans[3]}\n"


def write_ade(folder: Path, read: Reader, sizes: Sizes) -> Written:
    classification = [(row["text"], row["label"]) for row in read.rows("ade_classification", "ADE sentences")]
    effects = list(read.rows("ade_drug_effect", "ADE drug-effect pairs"))
    doses = list(read.rows("ade_drug_dose", "ADE drug-dose pairs"))
    labels = Counter(label for _, label in classification)
    if set(labels) - {0, 1}:
        raise ValueError(f"{ADE_REPO}: classification labels must be 0 or 1, found {sorted(labels)}")
    # DRUG-AE.rel is the positives' file: its sentences must be exactly the "Related" rows, or the
    # classification split built from these files would not be the published one.
    related = Counter(text for text, label in classification if label == 1)
    if related != Counter(row["text"] for row in effects):
        raise ValueError(
            f"{ADE_REPO}: the classification config's {sum(related.values()):,} 'Related' sentences are not "
            f"the drug-effect config's {len(effects):,} sentences; this is not the published corpus"
        )
    negatives = [text for text, label in classification if label == 0]
    for i, text in enumerate(negatives):
        if "\n" in text or "\r" in text:
            raise ValueError(f"{ADE_REPO}: negative sentence {i} holds a line break: {text[:80]!r}")
    files = {
        "DRUG-AE.rel": [_relation_line(r, "effect", f"drug-effect row {i}") for i, r in enumerate(effects)],
        "DRUG-DOSE.rel": [_relation_line(r, "dosage", f"drug-dose row {i}") for i, r in enumerate(doses)],
        "ADE-NEG.txt": [f"{UNKNOWN_PMID} NEG {text}\n" for text in negatives],
    }
    for name, lines in files.items():
        (folder / name).write_bytes("".join(lines).encode("utf-8"))
    return Written(
        {name: len(lines) for name, lines in files.items()},
        [
            "Built from the hub's three configs, not copied from the original files; the hub's loading "
            "script read the original DRUG-AE.rel, DRUG-DOSE.rel and ADE-NEG.txt, so sentences, entities and "
            "their order are the original's.",
            f"The PMID column is {UNKNOWN_PMID} on every line: the hub copy has no PMIDs, so sentences "
            "cannot be grouped by abstract.",
            "begin/end are character offsets (end exclusive) of the entity's first occurrence in the "
            "sentence, not offsets into the whole `PMID, title, abstract` document as in the original; where "
            "an entity occurs twice in a sentence, the original annotation may be the second occurrence.",
            "The corpus' own README.txt is not on the hub and is not included.",
        ],
    )


# --- Wikipedia ---------------------------------------------------------------------------------------------


class RollingFiles:
    """Records appended to numbered files, starting a new file when the next record would pass max_bytes."""

    def __init__(self, folder: Path, name: Callable[[int], str], max_bytes: int):
        self.folder, self.name, self.max_bytes = folder, name, max_bytes
        self.paths: list[Path] = []
        self._file = None
        self._size = 0

    def write(self, record: bytes) -> None:
        if self._file is None or (self._size and self._size + len(record) > self.max_bytes):
            self._open_next()
        self._file.write(record)
        self._size += len(record)

    def _open_next(self) -> None:
        self.close()
        path = self.folder / self.name(len(self.paths))
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file, self._size = path.open("wb"), 0
        self.paths.append(path)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def wikiextractor_name(index: int) -> str:
    """AA/wiki_00 .. AA/wiki_99, AB/wiki_00 ..: WikiExtractor's file names."""
    group = index // 100
    return f"{chr(65 + group // 26)}{chr(65 + group % 26)}/wiki_{index % 100:02d}"


def wikiextractor_doc(row: dict) -> str | None:
    """One article as WikiExtractor writes it; None for one the format cannot hold (empty, or a `</doc>`
    line in its text)."""
    title, text = row["title"].strip(), row["text"].strip()
    if not text or any(line.rstrip() == "</doc>" for line in text.split("\n")):
        return None
    attrs = " ".join(f'{key}="{html.escape(str(row[key]), quote=True)}"' for key in ("id", "url", "title"))
    return f"<doc {attrs}>\n{title}\n\n{text}\n\n</doc>\n"


def write_wikipedia(folder: Path, read: Reader, sizes: Sizes) -> Written:
    files = RollingFiles(folder, wikiextractor_name, WIKI_FILE_BYTES)
    written = skipped = 0
    try:
        for row in read.rows("wikipedia", "Wikipedia articles"):
            doc = wikiextractor_doc(row)
            if doc is None:
                skipped += 1
                continue
            files.write(doc.encode("utf-8"))
            written += 1
            if written == sizes.wikipedia_articles:
                break
    finally:
        files.close()
    return Written(
        {"articles": written, "files": len(files.paths), "skipped_empty": skipped},
        [
            "Articles of the 2023-11-01 dump (wikimedia/wikipedia, 20231101.en), not the shared copy's 2015 "
            "dump: the first articles of its first file, in its order, without empty ones.",
            "Written in WikiExtractor's layout by modernenc (`<doc id url title>`, title line, blank line, "
            "the dataset's `text` as is, blank line, `</doc>`; files of at most 1 MiB); `url` is the "
            "dataset's, not WikiExtractor's `?curid=` form.",
        ],
    )


# --- PubMed ------------------------------------------------------------------------------------------------


def write_pubmed(folder: Path, read: Reader, sizes: Sizes) -> Written:
    files = RollingFiles(folder, lambda i: f"pubmed_{i:03d}.jsonl", PUBMED_FILE_BYTES)
    pmids: set[str] = set()
    texts: set[str] = set()
    skipped: Counter[str] = Counter()
    written = 0
    try:
        for row in read.rows("pubmed", "PubMed abstracts"):
            title, abstract = (row.get("title") or "").strip(), (row.get("content") or "").strip()
            pmid = None if row.get("PMID") is None else str(row["PMID"])
            key = " ".join(f"{title} {abstract}".lower().split())
            if len(abstract) < MIN_ABSTRACT_CHARS:
                skipped["short"] += 1
            elif (pmid is not None and pmid in pmids) or key in texts:
                skipped["duplicate"] += 1
            else:
                pmids.add(pmid)
                texts.add(key)
                text = f"{title}\n{abstract}" if title else abstract
                record = {"text": text, "pmid": pmid, "source": PUBMED_TAG}
                files.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
                written += 1
                if written == sizes.pubmed_abstracts:
                    break
    finally:
        files.close()
    return Written(
        {
            "abstracts": written,
            "files": len(files.paths),
            "skipped_short": skipped["short"],
            "skipped_duplicate": skipped["duplicate"],
        },
        [
            "One source, MedRAG/pubmed's first file (chunk/pubmed23n0001.jsonl: the first file of PubMed's "
            "2023 baseline, so the oldest records), instead of the shared copy's seven corpora of newer "
            f"abstracts; every record has the source tag `{PUBMED_TAG}` and its PMID.",
            "MedRAG/pubmed holds PubMed titles and abstracts as plain JSONL, one article per row with PMID, "
            "title and abstract in their own columns: it streams without a loading script and every record "
            "keeps its PMID for tracing.",
            f"As in the shared copy: abstracts under {MIN_ABSTRACT_CHARS} characters are dropped, and "
            "records are de-duplicated by PMID and by normalised text.",
        ],
    )


# --- tokenizer ---------------------------------------------------------------------------------------------


def write_tokenizer(folder: Path, read: Reader, sizes: Sizes) -> Written:
    from tokenizers import Tokenizer

    from modernenc.model.config import MODERNBERT_SPECIAL_IDS

    for filename in read.sources["tokenizer"].files:
        (folder / filename).write_bytes(read.file("tokenizer", filename))
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    found = {name: tokenizer.token_to_id(f"[{name.upper()}]") for name in MODERNBERT_SPECIAL_IDS}
    if found != MODERNBERT_SPECIAL_IDS:
        raise ValueError(
            f"{read.sources['tokenizer'].repo}'s tokenizer.json has special ids {found}, not ModernBERT's "
            f"{MODERNBERT_SPECIAL_IDS}"
        )
    return Written(
        {"vocabulary": tokenizer.get_vocab_size()},
        [
            "From answerdotai/ModernBERT-base itself; the shared copy's files came from ModernBERT-large's "
            "release (the same tokenizer, bytes not compared)."
        ],
    )


# Output folder -> the sources it is built from, and its writer.
FOLDERS: dict[str, tuple[tuple[str, ...], Callable[[Path, Reader, Sizes], Written]]] = {
    "ade_corpus_v2": (("ade_classification", "ade_drug_effect", "ade_drug_dose"), write_ade),
    "wikipedia_en": (("wikipedia",), write_wikipedia),
    "pubmed": (("pubmed",), write_pubmed),
    "tokenizers/modernbert": (("tokenizer",), write_tokenizer),
}
LICENCES = {
    "ade_corpus_v2": "the hub card says 'unknown'; cite Gurulingappa et al., J Biomed Inform 2012",
    "wikipedia_en": "CC BY-SA 3.0 and GFDL, as Wikipedia states",
    "pubmed": "the hub card states none; PubMed abstracts are NLM/MEDLINE records whose copyright stays "
    "with their publishers",
    "tokenizers/modernbert": "Apache-2.0 (ModernBERT's release)",
}


# --- the fetch ---------------------------------------------------------------------------------------------


def _pin(source: HubSource) -> dict:
    return {
        "repo": source.repo,
        "repo_type": source.repo_type,
        "revision": source.revision,
        "files": list(source.files),
    }


def _readme(name: str, sources: Iterable[str], reader: Reader, written: Written) -> str:
    lines = [f"# {name}", "", "Built by `modernenc fetch-data` from:", ""]
    for source_name in sources:
        source, where = reader.sources[source_name], reader.resolved[source_name]
        files = ", ".join(f"`{f}`" for f in source.files)
        if where.commit:
            lines.append(f"- the Hugging Face hub's `{source.repo}` at commit {where.commit}: {files}")
        else:
            lines.append(
                f"- a local copy of `{source.repo}` ({where.location}, revision not checked): {files}"
            )
    lines += [
        "",
        "Counts: " + ", ".join(f"{key} {value:,}" for key, value in written.counts.items()) + ".",
        "",
    ]
    lines += ["How it differs from the shared copy (`../shared/data`):", ""]
    lines += [f"- {note}" for note in written.notes]
    lines += ["", f"Licence: {LICENCES[name]}.", ""]
    return "\n".join(lines)


def _top_readme(folders: dict[str, Written]) -> str:
    lines = [
        "# Bundled data, fetched from the Hugging Face hub",
        "",
        "Built by `modernenc fetch-data` in the layout of `../shared/data`. `manifest.json` lists the "
        "sources, the revisions read, counts and SHA-256 per file; each folder's README says how it differs "
        "from the shared copy.",
        "",
        "| folder | counts |",
        "| --- | --- |",
    ]
    for name, written in folders.items():
        counts = ", ".join(f"{key} {value:,}" for key, value in written.counts.items())
        lines.append(f"| `{name}/` | {counts} |")
    return "\n".join(lines) + "\n"


@contextmanager
def _hub_access(mirror: Path | None) -> Iterator[None]:
    """Fail at once, in one sentence, when the sources are on an unreachable hub."""
    if mirror is not None:
        yield
        return
    from modernenc.utils.hub import offline_unless_reachable

    with offline_unless_reachable() as offline:
        if offline:
            raise HubUnreachable(
                f"{OFFLINE}, so nothing can be fetched; run `modernenc fetch-data` where the hub is "
                f"reachable (or with --mirror DIR, local copies of the repositories), or set {ENV_VAR} to an "
                "existing copy of the data folder"
            )
        yield


def _check_up_to_date(out: Path, sources: dict[str, HubSource]) -> dict:
    manifest = verify(out, f"run `modernenc fetch-data --out {out} --force` to fetch it again")
    recorded = {name: entry.get("pinned") for name, entry in manifest.get("sources", {}).items()}
    changed = [name for name, source in sources.items() if recorded.get(name) != _pin(source)]
    if changed:
        raise RuntimeError(
            f"{out} was fetched from other sources than this modernenc pins ({', '.join(changed)}); pass "
            "--force to fetch them again"
        )
    return manifest


def fetch_data(
    out: str | Path | None = None,
    *,
    mirror: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
    sizes: Sizes = Sizes(),
    sources: dict[str, HubSource] | None = None,
) -> dict:
    """Build the data folder at ``out`` (default: `user_data_dir()`); returns its manifest.

    A folder with a manifest is verified and left alone (``force`` fetches it again and replaces it); a
    non-empty folder without one is never touched.
    """
    out = (Path(out) if out is not None else user_data_dir()).resolve()
    sources = SOURCES if sources is None else sources
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    has_manifest = (out / MANIFEST).is_file()
    if has_manifest and not force:
        manifest = _check_up_to_date(out, sources)
        print(
            f"{out}: all {len(manifest['files'])} files match {MANIFEST} "
            f"(digest sha256:{manifest['digest']}); nothing to do"
        )
        return manifest
    if out.is_dir() and not has_manifest and any(out.iterdir()):
        raise FileExistsError(
            f"{out} is not empty and holds no {MANIFEST}, so it is no folder modernenc fetched; pass a new "
            "or empty --out"
        )
    if has_manifest:  # --force replaces what was fetched (changed or not), never a file put in beside it
        listed = {*read_manifest(out)["files"], MANIFEST}
        added = [
            rel
            for rel in (p.relative_to(out).as_posix() for p in sorted(out.rglob("*")) if not p.is_dir())
            if rel not in listed
        ]
        if added:
            shown = ", ".join(added[:5]) + (f", ... ({len(added)} in all)" if len(added) > 5 else "")
            raise FileExistsError(
                f"{out} holds files fetch-data did not write: {shown}; refusing to replace it even with "
                "--force. Move them out or pass another --out"
            )
    mirror = Path(mirror) if mirror is not None else None
    with _hub_access(mirror):
        resolved = {name: resolve_source(source, mirror) for name, source in sources.items()}
        for name, source in sources.items():
            if mirror is None and not source.pinned:
                print(
                    f"warning: {source.repo} is read at '{source.revision}' (now commit "
                    f"{resolved[name].commit}), not at a pinned commit; {MANIFEST} records the commit",
                    file=sys.stderr,
                )
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = out.parent / f".{out.name}.fetching"
        shutil.rmtree(staging, ignore_errors=True)  # what an interrupted run left
        try:
            manifest, folders = _build(staging, Reader(sources, resolved, progress), sizes)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    _move_into_place(staging, out)
    _report_short(folders, sizes)
    print(f"wrote {out} ({len(manifest['files'])} files; {MANIFEST} digest sha256:{manifest['digest']})")
    return manifest


def _build(staging: Path, reader: Reader, sizes: Sizes) -> tuple[dict, dict[str, Written]]:
    """Write every folder, the READMEs, then the manifest (last: a manifest means a complete folder)."""
    from modernenc import __version__

    folders = {}
    for name, (used, write) in FOLDERS.items():
        (staging / name).mkdir(parents=True)
        folders[name] = write(staging / name, reader, sizes)
        readme = _readme(name, used, reader, folders[name])
        (staging / name / "README.md").write_text(readme, encoding="utf-8")
        counts = ", ".join(f"{key} {value:,}" for key, value in folders[name].counts.items())
        print(f"  {name}: {counts}", flush=True)
    (staging / "README.md").write_text(_top_readme(folders), encoding="utf-8")
    info = {
        "created_by": f"modernenc {__version__} fetch-data",
        "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sources": {
            name: {
                "pinned": _pin(source),
                "read_from": reader.resolved[name].location,
                "commit": reader.resolved[name].commit,
            }
            for name, source in reader.sources.items()
        },
        "folders": {
            name: {"sources": list(FOLDERS[name][0]), "counts": w.counts, "notes": w.notes}
            for name, w in folders.items()
        },
    }
    return write_manifest(staging, info), folders


def _move_into_place(staging: Path, out: Path) -> None:
    if out.exists():  # an earlier fetch (replaced under --force), or an empty folder
        old = out.parent / f".{out.name}.replaced"
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old)
    else:
        staging.rename(out)


def _report_short(folders: dict[str, Written], sizes: Sizes) -> None:
    wanted = {
        ("wikipedia_en", "articles"): sizes.wikipedia_articles,
        ("pubmed", "abstracts"): sizes.pubmed_abstracts,
    }
    for (name, key), target in wanted.items():
        got = folders[name].counts[key]
        if got < target:
            print(f"note: {name} has {got:,} {key}, fewer than the {target:,} wanted: its source ran out")


def ensure_bundled_data(progress: bool = True) -> Path:
    """The bundled data folder (verified when it has a manifest), fetched into the user cache first when
    there is none and the hub is reachable; offline, one sentence names both ways to provide it."""
    from modernenc.utils.hub import offline_unless_reachable

    try:
        folder = shared_data_dir()
    except DataNotFound as missing:
        target = user_data_dir()
        with offline_unless_reachable() as offline:
            if offline:
                raise HubUnreachable(f"{missing}; {OFFLINE}, so it cannot be fetched from here") from None
        print(
            f"no bundled data found: fetching it from the Hugging Face hub into {target} first "
            "(once; `modernenc fetch-data` does the same)",
            flush=True,
        )
        fetch_data(target, progress=progress)
        return target
    if read_manifest(folder) is not None:
        verify(folder, f"run `modernenc fetch-data --out {folder} --force` to fetch it again")
    return folder
