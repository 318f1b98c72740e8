"""The one door between the service and the model: load a folder, its decision rule, tokenize, score.

Everything the server knows about models goes through this module, on the public APIs of
``modernenc.tasks`` (``predict.load_classifier``, ``predict.predict_probabilities``,
``classification_data.tokenize_texts``, ``decisions.read_thresholds`` / ``resolve_decision``), so a change
there is absorbed here and nowhere else.

Precisions: the model is loaded as its fp32, bf16 or int8 variant (``load_classifier(..., precision)``),
and decisions use the rule thresholds.json records for that precision (``read_thresholds(dir, dtype)``);
a bf16 or int8 folder without one is refused at start-up, naming `modernenc calibrate`, since a
threshold chosen on fp32 scores does not carry over.

A span tagger (a token classifier with BIO tags) is served on ``/v1/extract`` through
``tasks.extract.SpanTagger``: ``frame`` tokenizes with character offsets, ``tag`` runs one packed batch and
``spans`` decodes, by the rule `modernenc predict` and the validation scores use.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modernenc.utils.files import sha256_file
from modernenc.utils.precision import PRECISIONS

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
SUPPORTED_DTYPES = PRECISIONS
REQUEST_THRESHOLD = "request"  # the threshold name recorded when a request sets its own threshold

SEQUENCE_CLASSIFIER = "ModernBertForSequenceClassification"
TOKEN_CLASSIFIER = "ModernBertForTokenClassification"
TASKS = {SEQUENCE_CLASSIFIER: "classify", TOKEN_CLASSIFIER: "extract"}


class ModelRefused(ValueError):
    """The folder cannot be served; the message is one sentence that names the problem."""


@dataclass(frozen=True)
class DecisionPolicy:
    """Threshold and review band in force for a decision, with the threshold's name and provenance."""

    threshold: float
    threshold_name: str
    review_band: tuple[float, float]
    source: str

    def decide(self, probability: float, positive: int, labels: Sequence[str] | None) -> tuple[Any, bool]:
        """(label, needs_review) exactly as ``modernenc predict`` decides: positive when p >= threshold,
        review when lo <= p <= hi. The label is its name when the model has names, else its class index."""
        cls = positive if probability >= self.threshold else 1 - positive
        lo, hi = self.review_band
        return (labels[cls] if labels else cls), lo <= probability <= hi


@dataclass
class Engine:
    """A loaded model with its decision rule; ``tokenize`` and ``score`` are thread-safe."""

    model_dir: Path
    task: str  # "classify" (sequence classifier) or "extract" (span tagger)
    dtype: str
    device: str
    digest: str  # SHA-256 of the weights (see weights_digest)
    max_length: int  # tokens per text, [CLS] and [SEP] included; longer texts are truncated
    positive_label: int | None  # None for a span tagger, which makes no sentence decision
    label_names: list[str] | None  # a span tagger's: its BIO tags
    thresholds: dict[str, float]  # every threshold thresholds.json records, for /v1/info
    default_policy: DecisionPolicy | None
    _rule: Any = field(repr=False)  # tasks.decisions.DecisionRule | None
    _model: Any = field(repr=False)
    _tokenizer: Any = field(repr=False)
    _cls_id: int = field(repr=False)
    _sep_id: int = field(repr=False)
    _tagger: Any = field(default=None, repr=False)  # tasks.extract.SpanTagger, for task "extract"
    _tokenizer_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def policy(self, threshold: float | None = None) -> DecisionPolicy:
        """The folder's rule, or a request's own threshold with the band moved around it, as predict does."""
        if threshold is None or threshold == self.default_policy.threshold:
            return self.default_policy
        from modernenc.tasks.decisions import resolve_decision

        t, band, _ = resolve_decision(self._rule, threshold)
        return DecisionPolicy(t, REQUEST_THRESHOLD, band, "the request")

    def tokenize(self, texts: Sequence[str]) -> tuple[list[list[int]], list[bool]]:
        """Token ids per text, truncated exactly as ``modernenc predict`` (and the validation that chose the
        threshold) truncates them, and whether each text was truncated."""
        from modernenc.tasks.classification_data import tokenize_texts

        # tokenize_texts reconfigures the tokenizer on each call: one caller at a time.
        with self._tokenizer_lock:
            ids, _ = tokenize_texts(self._tokenizer, texts, self.max_length, self._cls_id, self._sep_id)
            # It counts truncations but does not say which text; only a text that fills max_length can have
            # been cut, and it was iff one more token of room gives it more tokens.
            full = [i for i, seq in enumerate(ids) if len(seq) == self.max_length]
            longer = []
            if full:
                wider, _ = tokenize_texts(
                    self._tokenizer, [texts[i] for i in full], self.max_length + 1, self._cls_id, self._sep_id
                )
                longer = [i for i, seq in zip(full, wider, strict=True) if len(seq) > self.max_length]
        truncated = [False] * len(ids)
        for i in longer:
            truncated[i] = True
        return ids, truncated

    def score(self, token_ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Probability of the positive label per sequence, in input order, from ONE packed forward pass."""
        from modernenc.tasks.predict import predict_probabilities

        if self.task != "classify":
            raise RuntimeError(f"{self.model_dir} is not a sequence classifier; it cannot score texts")
        probabilities = predict_probabilities(
            self._model, token_ids, len(token_ids), self.positive_label, progress=False
        )
        if not np.isfinite(probabilities).all():  # NaN >= threshold is False: it would read as "no event"
            bad = int((~np.isfinite(probabilities)).sum())
            raise FloatingPointError(f"the model returned {bad} non-finite probabilities in a batch")
        return probabilities

    def frame(self, texts: Sequence[str]) -> tuple[list[list[int]], list[Any], list[bool]]:
        """A span tagger's token ids, character offsets and truncation flags per text, framed and cut as
        ``modernenc predict`` frames them."""
        with self._tokenizer_lock:
            framed, truncated = self._tagger.frame(texts)
        return [ids for ids, _ in framed], [offsets for _, offsets in framed], truncated

    def tag(self, token_ids: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Tag probabilities ``[tokens, tags]`` per sequence, in input order, from ONE packed forward pass."""
        from modernenc.tasks.extract import predict_token_probabilities

        if self.task != "extract":
            raise RuntimeError(f"{self.model_dir} is not a span tagger; it cannot tag texts")
        probabilities = predict_token_probabilities(self._model, token_ids, len(token_ids))
        if not all(np.isfinite(p).all() for p in probabilities):  # argmax of NaN is tag 0: silently wrong
            raise FloatingPointError("the model returned non-finite tag probabilities in a batch")
        return probabilities

    def spans(self, texts: Sequence[str], offsets: Sequence[Any], probabilities: Sequence[Any]) -> list[list]:
        """Spans ``{start, end, label, text, score}`` per text (``tasks.extract.decode``)."""
        ids = [None] * len(texts)  # decode reads only the offsets of the framing
        return self._tagger.decode(texts, list(zip(ids, offsets, strict=True)), probabilities)

    def run(self, token_ids: Sequence[Sequence[int]]) -> Sequence[Any]:
        """The model's output per text for this engine's task: what the batch scheduler runs."""
        return self.score(token_ids) if self.task == "classify" else self.tag(token_ids)

    def warm_up(self) -> None:
        """One real batch through tokenizer and model, so the first request does not pay for lazy setup."""
        texts = ["Warm-up: the patient developed a rash after amoxicillin."] * 4
        if self.task == "classify":
            ids, _ = self.tokenize(texts)
            self.score(ids)
        else:
            ids, offsets, _ = self.frame(texts)
            self.spans(texts, offsets, self.tag(ids))


# ---------------------------------------------------------------------------------------------------------
# loading


def weights_digest(model_dir: str | Path) -> str:
    """SHA-256 of ``model.safetensors``; for a sharded folder, of its index's ``name sha256`` lines, so one
    string still names exactly the weights served."""
    model_dir = Path(model_dir)
    single = model_dir / WEIGHTS_FILE
    if single.is_file():
        return sha256_file(single)
    index = model_dir / WEIGHTS_INDEX
    if index.is_file():
        import hashlib

        shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
        lines = "".join(f"{name} {sha256_file(model_dir / name)}\n" for name in shards)
        return hashlib.sha256(lines.encode()).hexdigest()
    raise ModelRefused(f"{model_dir} has no {WEIGHTS_FILE}; serve a folder written by save_pretrained")


def _architecture(model_dir: Path) -> str:
    from modernenc.tasks.extract import architectures

    try:
        found = architectures(model_dir)
    except FileNotFoundError:
        raise ModelRefused(f"{model_dir} has no config.json; serve a Hugging Face model folder") from None
    except ValueError as err:
        raise ModelRefused(str(err)) from None
    for name in found:
        if name in TASKS:
            return name
    raise ModelRefused(
        f"{model_dir} holds {'/'.join(found) or 'no architecture'}, not a fine-tuned {SEQUENCE_CLASSIFIER} "
        f"or {TOKEN_CLASSIFIER}; serve a fine-tuned classifier"
    )


def _check_dtype(dtype: str) -> None:
    if dtype not in SUPPORTED_DTYPES:
        raise ModelRefused(f"--dtype must be one of {', '.join(SUPPORTED_DTYPES)}; got {dtype!r}")


def _load_model(model_dir: Path, dtype: str, device: str):
    """(model, tokenizer) as the ``dtype`` variant; a slow precision on this machine warns once, here."""
    from modernenc.tasks.predict import load_classifier

    return load_classifier(model_dir, device, dtype)


def _decision_rule(model_dir: Path, dtype: str):
    """(rule or None, threshold, band, source): the rule thresholds.json records for the served dtype.

    A bf16 or int8 folder without one is refused, as `modernenc predict --dtype` refuses it without
    --threshold: thresholds chosen on fp32 scores do not carry over."""
    from modernenc.tasks.decisions import read_thresholds, resolve_decision, uncalibrated_message
    from modernenc.tasks.predict import warn_if_calibrated_elsewhere

    rule = read_thresholds(model_dir, dtype)
    if rule is None and dtype != "fp32":
        raise ModelRefused(uncalibrated_message(model_dir, dtype, alternative=None))
    warn_if_calibrated_elsewhere(rule)
    threshold, band, source = resolve_decision(rule)
    if rule is None:
        logger.warning(
            "%s has no thresholds.json: decisions use threshold 0.5, not one chosen on validation for a "
            "target recall", model_dir,
        )  # fmt: skip
    return rule, threshold, band, source


def _label_names(rule, id2label: dict | None, num_labels: int) -> list[str] | None:
    """Names as ``modernenc predict`` writes them: thresholds.json's, else the config's unless they are
    transformers' LABEL_i placeholders; None means labels are class indices."""
    if rule is not None and rule.label_names is not None:
        if len(rule.label_names) != num_labels:
            raise ModelRefused(
                f"thresholds.json lists {len(rule.label_names)} label_names for a {num_labels}-label model"
            )
        return list(rule.label_names)
    if id2label and not all(id2label.get(i) == f"LABEL_{i}" for i in range(num_labels)):
        return [id2label[i] for i in range(num_labels)]
    return None


def resolve_device(device: str = "auto", dtype: str = "fp32") -> str:
    """``auto`` (CUDA when there is one, except for int8: the CPU), ``cpu``, ``cuda`` or ``cuda:N``, checked
    before any loading (``tasks.predict.resolve_device``, as `modernenc predict` checks it)."""
    from modernenc.tasks.predict import resolve_device as resolve

    try:
        return str(resolve(device, dtype))
    except ValueError as err:
        raise ModelRefused(str(err)) from None


def load_engine(model_dir: str | Path, dtype: str = "fp32", device: str = "auto") -> Engine:
    """Load a fine-tuned folder for serving; any reason it cannot be served is a ``ModelRefused``."""
    from modernenc.tasks.predict import check_model_folder

    try:
        model_dir = check_model_folder(model_dir)  # a .pt file: says to export-hf it first
    except (ValueError, FileNotFoundError) as err:
        raise ModelRefused(str(err)) from None
    _check_dtype(dtype)
    device = resolve_device(device, dtype)
    architecture = _architecture(model_dir)
    digest = weights_digest(model_dir)
    if TASKS[architecture] == "extract":
        return _load_tagger(model_dir, dtype, device, digest)
    try:
        rule, threshold, band, source = _decision_rule(model_dir, dtype)
        model, tokenizer = _load_model(model_dir, dtype, device)
    except (OSError, ValueError) as err:  # the library's messages already name file and problem
        raise ModelRefused(str(err)) from None
    config = model.config
    positive = rule.positive_label if rule is not None else 1
    if not 0 <= positive < config.num_labels:
        raise ModelRefused(
            f"positive_label {positive} is not a class of this {config.num_labels}-label model"
        )
    # Truncate as the validation that chose the threshold did; without a record, use the whole context.
    max_length = rule.max_length if rule is not None and rule.max_length else config.max_position_embeddings
    return Engine(
        model_dir=model_dir,
        task=TASKS[architecture],
        dtype=dtype,
        device=str(device),
        digest=digest,
        max_length=int(max_length),
        positive_label=positive,
        label_names=_label_names(rule, config.id2label, config.num_labels),
        thresholds=dict(rule.thresholds) if rule is not None else {"default": 0.5},
        default_policy=DecisionPolicy(threshold, rule.chosen if rule else "default", band, source),
        _rule=rule,
        _model=model,
        _tokenizer=tokenizer,
        _cls_id=config.cls_token_id,
        _sep_id=config.sep_token_id,
    )


def _load_tagger(model_dir: Path, dtype: str, device: str, digest: str) -> Engine:
    """A span tagger for /v1/extract. It makes no sentence decision, so it needs no thresholds.json (int8's
    spans are argmax tags, not a threshold chosen on fp32 scores); its precision is the one served."""
    from modernenc.tasks.extract import SpanTagger

    try:
        tagger = SpanTagger.from_folder(model_dir, device, dtype)
    except (OSError, ValueError) as err:  # names the folder and why it is not a BIO tagger
        raise ModelRefused(str(err)) from None
    return Engine(
        model_dir=model_dir,
        task="extract",
        dtype=dtype,
        device=str(device),
        digest=digest,
        max_length=int(tagger.max_length),
        positive_label=None,
        label_names=list(tagger.tag_names),
        thresholds={},
        default_policy=None,
        _rule=None,
        _model=tagger.model,
        _tokenizer=tagger.tokenizer,
        _cls_id=tagger.specials[0],
        _sep_id=tagger.specials[1],
        _tagger=tagger,
    )
