"""Span extraction with a fine-tuned BIO tagger: texts in, labelled character spans out.

The API serving calls::

    tagger = SpanTagger.from_folder("checkpoints/my-tagger/best-hf")  # a fine-tuned BIO tagger
    tagger.extract(["Rash after amoxicillin."])
    # [[{"start": 11, "end": 22, "label": "DRUG", "text": "amoxicillin", "score": 0.97}]]

Decoding is strict IOB2 over every token's most likely tag (tasks/entities.py), the rule the validation
metrics use, so the reported scores are those of this output. ``score`` is the mean, over the span's
tokens, of the probability of the tag chosen, as `transformers`' pipeline ``aggregation_strategy="simple"``
reports it; on a well-formed tag sequence that pipeline returns the same spans (a test checks it).
Inference runs on packed, length-sorted batches like ``tasks/predict.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from modernenc.tasks.entities import entities_from_tags, is_bio
from modernenc.tasks.spans import char_spans, frame

TOKEN_ARCHITECTURE = "ModernBertForTokenClassification"


def architectures(model_dir: str | Path) -> list[str]:
    """The ``architectures`` a Hugging Face folder's config.json lists (empty when it lists none)."""
    config_file = Path(model_dir) / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} does not exist; pass a Hugging Face model folder")
    try:
        found = json.loads(config_file.read_text()).get("architectures") or []
    except (json.JSONDecodeError, AttributeError):
        raise ValueError(f"{config_file} is not a JSON object") from None
    return list(found)


def is_token_classifier(model_dir: str | Path) -> bool:
    return TOKEN_ARCHITECTURE in architectures(model_dir)


def predict_token_probabilities(
    model: torch.nn.Module,
    token_ids: Sequence[Sequence[int]],
    batch_size: int = 64,
    progress: bool = False,
) -> list[np.ndarray]:
    """Tag probabilities ``[tokens, tags]`` for each sequence, in input order, from packed length-sorted
    batches. The model computes in the precision it was loaded for (``model.for_inference(...)``)."""
    from tqdm.auto import tqdm

    from modernenc.tasks.classification_data import collate_packed, length_sorted_batches

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    device = next(model.parameters()).device
    out: list[np.ndarray] = [np.empty(0)] * len(token_ids)
    bar = tqdm(total=len(token_ids), unit="text", desc="extract", disable=not progress)
    with torch.inference_mode(), bar:
        for chunk in length_sorted_batches([len(ids) for ids in token_ids], batch_size):
            batch = collate_packed([(np.asarray(token_ids[i]), 0) for i in chunk])
            inputs = {k: batch[k].to(device) for k in ("input_ids", "cu_seqlens", "position_ids")}
            probs = model(**inputs, max_seqlen=batch["max_seqlen"]).logits.float().softmax(-1).cpu().numpy()
            bounds = batch["cu_seqlens"].tolist()
            for i, start, end in zip(chunk, bounds, bounds[1:], strict=False):
                out[i] = probs[start:end]
            bar.update(len(chunk))
    return out


def decode(
    text: str, offsets: np.ndarray, probs: np.ndarray, names: Sequence[str]
) -> list[dict[str, object]]:
    """Spans ``{start, end, label, text, score}`` of one framed sequence (its first and last token are
    [CLS] and [SEP])."""
    best = probs[1:-1].argmax(-1)
    found = [(label, a + 1, b + 1) for label, a, b in entities_from_tags([names[i] for i in best])]
    spans = []
    for (start, end, label), (_, a, b) in zip(char_spans(text, offsets, found), found, strict=True):
        score = float(probs[np.arange(a, b), best[a - 1 : b - 1]].mean())
        spans.append({"start": start, "end": end, "label": label, "text": text[start:end], "score": score})
    return spans


@dataclass
class SpanTagger:
    """A BIO tagger and its tokenizer, ready to extract spans."""

    model: torch.nn.Module
    tokenizer: object  # tokenizers.Tokenizer
    tag_names: list[str]
    max_length: int
    specials: tuple[int, int]  # the tokenizer's [CLS] and [SEP] ids, which frame every text as in training

    @classmethod
    def from_folder(
        cls, model_dir: str | Path, device: str | torch.device = "cpu", precision: str = "fp32"
    ) -> SpanTagger:
        """Load a fine-tuned token classifier whose labels are BIO tags, as its ``precision`` variant (fp32,
        bf16, or int8 on the CPU: ``modernenc.model.precision``); anything else is refused."""
        from modernenc.data.masking import load_tokenizer
        from modernenc.model import ModernEncoderForTokenClassification

        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise FileNotFoundError(f"span model folder {model_dir} does not exist")
        found = architectures(model_dir)
        if TOKEN_ARCHITECTURE not in found:
            kind = "/".join(found) or "model with no architectures in config.json"
            raise ValueError(
                f"{model_dir} holds a {kind}, not a span tagger ({TOKEN_ARCHITECTURE}); fine-tune one with "
                "model.task=token_classification on texts with spans"
            )
        tokenizer_file = model_dir / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise FileNotFoundError(f"{tokenizer_file} is missing; export the model with its tokenizer")
        model = ModernEncoderForTokenClassification.from_pretrained(model_dir)
        names = [model.config.id2label[i] for i in range(model.config.num_labels)]
        if not is_bio(names):
            raise ValueError(
                f"{model_dir} tags tokens with {names}, not BIO tags (O, B-X, I-X), so it has no spans to "
                "extract"
            )
        tokenizer = load_tokenizer(tokenizer_file)
        specials = tuple(tokenizer.token_to_id(token) for token in ("[CLS]", "[SEP]"))
        if None in specials:
            raise ValueError(
                f"{tokenizer_file} has no [CLS] or [SEP] token; texts are framed [CLS] ... [SEP]"
            )
        model = model.to(device).for_inference(precision)
        return cls(model, tokenizer, names, model.config.max_position_embeddings, specials)

    def extract(
        self, texts: Sequence[str], batch_size: int = 64, progress: bool = False
    ) -> list[list[dict[str, object]]]:
        """The spans of each text, in input order; a text cut at ``max_length`` tokens keeps its head's."""
        return self.extract_with_counts(texts, batch_size, progress)[0]

    def extract_with_counts(
        self,
        texts: Sequence[str],
        batch_size: int = 64,
        progress: bool = False,
        *,
        where: str = "texts",
        numbers: Sequence[int] | None = None,
    ) -> tuple[list[list[dict[str, object]]], int]:
        """(spans per text, how many texts were longer than ``max_length`` tokens and cut).

        Non-finite tag probabilities raise ``tasks.predict.NonFiniteScoresError`` naming the texts as
        ``numbers`` (default: their 1-based positions) in ``where``: their argmax, the first tag, would
        read as "no span"."""
        from modernenc.tasks.predict import refuse_non_finite

        framed, truncated = self.frame(texts)
        probs = predict_token_probabilities(self.model, [ids for ids, _ in framed], batch_size, progress)
        name = getattr(self.model, "name_or_path", None) or "the span tagger"
        refuse_non_finite(probs, name, where, numbers)
        return self.decode(texts, framed, probs), sum(truncated)

    def frame(self, texts: Sequence[str]) -> tuple[list[tuple[list[int], np.ndarray]], list[bool]]:
        """(``[CLS] ... [SEP]`` ids and character offsets per text, whether each was cut). A text longer
        than ``max_length`` tokens keeps its head and its [SEP], as training framed it."""
        framed = frame(self.tokenizer, texts, *self.specials)
        truncated = [len(ids) > self.max_length for ids, _ in framed]
        for i, cut in enumerate(truncated):
            if cut:
                ids, offsets = framed[i]
                keep = self.max_length - 1
                framed[i] = [*ids[:keep], ids[-1]], np.concatenate([offsets[:keep], offsets[-1:]])
        return framed, truncated

    def decode(
        self,
        texts: Sequence[str],
        framed: Sequence[tuple[list[int], np.ndarray]],
        probs: Sequence[np.ndarray],
    ) -> list[list[dict[str, object]]]:
        """Spans per text from its framing (``frame``) and its tag probabilities."""
        return [
            decode(text, offsets, p, self.tag_names)
            for text, (_, offsets), p in zip(texts, framed, probs, strict=True)
        ]


# ---------------------------------------------------------------------------------------------------------
# `modernenc predict` on a span tagger, and `--with-spans` beside a sentence classifier


@dataclass
class SpanSummary:
    out: Path
    examples: int
    seconds: float
    spans: dict[str, int]  # label -> count
    truncated: int
    with_spans: int  # texts with at least one span

    def __str__(self) -> str:
        per_s = self.examples / self.seconds if self.seconds > 0 else float("inf")
        found = ", ".join(f"{n} {label}" for label, n in sorted(self.spans.items())) or "no spans"
        cut = f"; {self.truncated} texts were cut to the model's length" if self.truncated else ""
        return (
            f"{self.examples} texts in {self.seconds:.1f} s ({per_s:,.0f} examples/s); {found} in "
            f"{self.with_spans} texts{cut}; wrote {self.out}"
        )


def _keep_input(row: dict) -> dict:
    # An input column named "spans" (gold spans, say) is kept beside ours, renamed input_spans.
    from modernenc.tasks.predict import keep_input_columns

    return keep_input_columns(row, ("spans",))


def predict_spans_file(
    model_dir: str | Path,
    input_path: str | Path,
    out: str | Path,
    *,
    text_column: str = "text",
    batch_size: int = 64,
    dtype: str = "fp32",
    device: str | None = None,
    force: bool = False,
    progress: bool = True,
) -> SpanSummary:
    """Tag every text of ``input_path`` and write ``out`` with its ``spans``, character offsets included."""
    from modernenc.tasks.predict import (
        check_model_folder,
        check_output_path,
        read_inputs,
        resolve_device,
        write_outputs,
    )
    from modernenc.tasks.provenance import write_provenance

    out = check_output_path(out, force=force, input_path=input_path, model_dir=model_dir)
    check_model_folder(model_dir)
    rows = read_inputs(input_path, text_column)
    tagger = SpanTagger.from_folder(model_dir, resolve_device(device, dtype), dtype)
    column = "text" if Path(input_path).suffix.lower() == ".txt" else text_column
    start = time.perf_counter()
    txt = Path(input_path).suffix.lower() == ".txt"  # its rows are the non-blank lines: name them by line
    spans, truncated = tagger.extract_with_counts(
        [r[column] for r in rows],
        batch_size,
        progress,
        where=f"{'lines' if txt else 'rows'} of {input_path}",
        numbers=[r["line"] for r in rows] if txt else None,
    )
    seconds = time.perf_counter() - start
    write_outputs([{**_keep_input(row), "spans": s} for row, s in zip(rows, spans, strict=True)], out)
    write_provenance(
        out,
        tool="predict",
        model_dir=model_dir,
        input_path=input_path,
        precision=dtype,
        counts={"rows": len(rows), "with_spans": sum(1 for s in spans if s), "truncated": truncated},
        decision={"max_length": tagger.max_length},  # no threshold: each token takes its likeliest tag
    )
    counts: dict[str, int] = {}
    for found in spans:
        for span in found:
            counts[span["label"]] = counts.get(span["label"], 0) + 1
    return SpanSummary(out, len(rows), seconds, counts, truncated, sum(1 for s in spans if s))


def add_spans(
    results: list[dict],
    texts: Sequence[str],
    flagged: Sequence[bool],
    tagger: SpanTagger,
    batch_size: int = 64,
) -> int:
    """Give each flagged row its ``spans`` and every other row ``spans: null`` (not extracted, which is not
    the same as none found); returns the number of flagged rows."""
    chosen = [i for i, flag in enumerate(flagged) if flag]
    found = (
        tagger.extract_with_counts(
            [texts[i] for i in chosen],
            batch_size,
            where="rows in input order",
            numbers=[i + 1 for i in chosen],
        )[0]
        if chosen
        else []
    )
    for i, row in enumerate(results):
        results[i] = {**_keep_input(row), "spans": None}
    for i, spans in zip(chosen, found, strict=True):
        results[i]["spans"] = spans
    return len(chosen)
