"""Classification fine-tuning through train.py: best model kept, thresholds chosen on validation, and the
reported test numbers re-derived independently with `transformers` and scikit-learn."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, write_small_ade_split
from sklearn.metrics import f1_score, precision_score, recall_score
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from modernenc.tasks.classification import positive_class
from modernenc.train.builders import build_task, build_trainer
from modernenc.train.config import ConfigError, load_config

TOKENIZER = SHARED_DATA / "tokenizers" / "modernbert"
SIZES = {"train": 64, "validation": 40, "test": 40}


@pytest.fixture(scope="module")
def ade_dir(tmp_path_factory) -> Path:
    return write_small_ade_split(tmp_path_factory.mktemp("ade"), SIZES)


def write_yaml(folder: Path, ade: Path, **extra: str) -> Path:
    lines = [
        "run_name: ft",
        f"save_folder: {folder / 'run'}",
        "model: {task: classification, preset: tiny}",
        f"data: {{train: {ade}/train.jsonl, eval: {ade}/validation.jsonl, test: {ade}/test.jsonl, "
        f"tokenizer: {TOKENIZER}, max_seq_len: 128, micro_batch_size: 16}}",
        "optimizer: {name: adamw, lr: 1.0e-3}",
        "scheduler: {t_warmup: 0ba, t_decay: 0ba}",
        "evaluation: {positive_label: '1', target_recall: 0.9, early_stopping_patience: 0}",
        "max_duration: 2ep",
        "eval_interval: 1ep",
        "save_interval: 1ep",
        "logging: {progress_bar: false}",
        *(f"{k}: {v}" for k, v in extra.items()),
    ]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ft.yaml").write_text("\n".join(lines) + "\n")
    return folder / "ft.yaml"


def run(cfg) -> None:
    parts = build_task(cfg)
    trainer = build_trainer(cfg, parts=parts)
    trainer.fit()
    parts.finish(trainer)
    trainer.close()


def hf_probabilities(model_dir: Path, texts: list[str]) -> np.ndarray:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        enc = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
        return model(**enc).logits.softmax(-1)[:, 1].numpy()


def test_finetune_reports_what_transformers_and_sklearn_measure(tmp_path, ade_dir):
    run(load_config(write_yaml(tmp_path, ade_dir)))
    best = tmp_path / "run" / "best-hf"
    report = json.loads((tmp_path / "run" / "eval" / "report.json").read_text())
    thresholds = report["thresholds"]
    assert set(thresholds) == {"default", "max_f1", "target_recall"}
    written = json.loads((best / "thresholds.json").read_text())
    assert written["thresholds"] == pytest.approx(thresholds)
    assert written["max_length"] == 128  # data.max_seq_len: predict truncates as validation did
    assert (tmp_path / "run" / "eval" / "pr_curve_test.png").stat().st_size > 0
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0

    rows = {s: [json.loads(x) for x in (ade_dir / f"{s}.jsonl").read_text().splitlines()] for s in SIZES}
    val_probs = hf_probabilities(best, [r["text"] for r in rows["validation"]])
    val_labels = np.array([r["label"] for r in rows["validation"]])
    assert recall_score(val_labels, val_probs >= thresholds["target_recall"]) >= 0.9

    test_probs = hf_probabilities(best, [r["text"] for r in rows["test"]])
    test_labels = np.array([r["label"] for r in rows["test"]])
    for name, t in thresholds.items():
        ours = report["splits"]["test"]["results"][name]
        predicted = test_probs >= t
        assert ours["recall"] == pytest.approx(recall_score(test_labels, predicted), abs=1e-6)
        assert ours["precision"] == pytest.approx(precision_score(test_labels, predicted, zero_division=0))
        assert ours["f1"] == pytest.approx(f1_score(test_labels, predicted, zero_division=0), abs=1e-6)
    lo, hi = written["review_band"]
    assert report["review_band"] == pytest.approx([lo, hi])
    missed = (test_labels == 1) & (test_probs < thresholds["target_recall"])
    in_band = (test_probs >= lo) & (test_probs <= hi)
    assert report["splits"]["test"]["review"] == {
        "needs_review": int(in_band.sum()),
        "missed": int(missed.sum()),
        "missed_in_band": int((missed & in_band).sum()),
    }

    # The exported folder is a standard transformers classifier with the run's label names.
    classify = pipeline("text-classification", model=str(best), tokenizer=str(best))
    assert classify("Aspirin caused a rash.")[0]["label"] in {"0", "1"}


def test_finetune_from_an_mlm_checkpoint_keeps_its_encoder(tmp_path, ade_dir):
    from modernenc.model import ModernEncoderConfig, ModernEncoderForMaskedLM

    mlm = ModernEncoderForMaskedLM(ModernEncoderConfig.from_preset("tiny"))
    mlm.save_pretrained(tmp_path / "mlm")
    cfg = load_config(write_yaml(tmp_path, ade_dir), [f"model.init_from={tmp_path / 'mlm'}"])
    model = build_task(cfg).model.model
    torch.testing.assert_close(
        model.model.layers[1].attn.Wqkv.weight, mlm.model.layers[1].attn.Wqkv.weight, rtol=0, atol=0
    )
    assert model.config.num_labels == 2


def classifier_of(folder: Path, labels: list[str]) -> Path:
    """A saved classifier of `labels`, in that order (untrained: here only its classes matter)."""
    from modernenc.model import ModernEncoderConfig, ModernEncoderForSequenceClassification

    config = ModernEncoderConfig.from_preset("tiny", num_labels=len(labels), id2label=dict(enumerate(labels)))
    ModernEncoderForSequenceClassification(config).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["1", "0"], r"orders its classes \['1', '0'\], the data \['0', '1'\], so its classifier would score "
         r"each class as another; set data\.labels=\['1', '0'\] to keep its order"),
        (["no", "yes"], r"is a classifier of \['no', 'yes'\], not of the data's labels \['0', '1'\], so its "
         r"classifier would score each class as the one in its place; give the data its labels"),
        (["0", "1", "2"], r"is a classifier of \['0', '1', '2'\], not of the data's labels \['0', '1'\]; "),
    ],
)  # fmt: skip
def test_a_classifier_is_continued_only_on_its_own_classes_in_its_order(tmp_path, ade_dir, labels, message):
    """Its task layer is taken row by row: with other classes, or its own in another order, each class
    was silently scored as the one in its place (the ADE head inverted, AUROC 1 - AUROC)."""
    start = classifier_of(tmp_path / "clf", labels)
    cfg = load_config(write_yaml(tmp_path, ade_dir), [f"model.init_from={start}"])
    with pytest.raises(ConfigError, match=rf"model\.init_from={start} {message}"):
        build_task(cfg)


@pytest.mark.parametrize(
    ("labels", "overrides"),
    [
        (["0", "1"], []),
        (["1", "0"], ["data.labels=['1', '0']", "evaluation.positive_label='1'"]),  # the fix the error names
        (["LABEL_0", "LABEL_1"], []),  # no names to go by: positions are all there is
    ],
)
def test_a_classifier_of_the_datas_classes_keeps_its_task_layer(tmp_path, ade_dir, labels, overrides):
    start = classifier_of(tmp_path / "clf", labels)
    cfg = load_config(write_yaml(tmp_path, ade_dir), [f"model.init_from={start}", *overrides])
    model = build_task(cfg).model.model
    saved = AutoModelForSequenceClassification.from_pretrained(start)
    torch.testing.assert_close(model.classifier.weight, saved.classifier.weight, rtol=0, atol=0)
    assert [model.config.id2label[i] for i in range(2)] == (labels if labels[0] != "LABEL_0" else ["0", "1"])


def test_missing_column_lists_the_columns_the_file_has(tmp_path, ade_dir):
    cfg = load_config(write_yaml(tmp_path, ade_dir), ["data.text_column=sentence"])
    with pytest.raises(ValueError, match=r"no column 'sentence'; its columns are: 'text', 'label'"):
        build_task(cfg)


def test_label_unseen_in_training_is_named(tmp_path, ade_dir):
    bad = tmp_path / "validation.jsonl"
    bad.write_text(json.dumps({"text": "a sentence", "label": 7}) + "\n")
    cfg = load_config(write_yaml(tmp_path, ade_dir), [f"data.eval={bad}"])
    with pytest.raises(
        ValueError, match=r"labels \['7'\] that training does not have; known labels: \['0', '1'\]"
    ):
        build_task(cfg)


@pytest.mark.parametrize(
    ("names", "positive_label", "expected"),
    [
        (["0", "1"], None, 1),
        (["1", "0"], None, 0),  # declared order (data.labels) moves the class ids, not the event
        (["false", "true"], None, 1),
        (["O", "DRUG"], None, 1),
        (["ade", "no_ade"], "ade", 0),
        (["neg", "neutral", "pos"], None, 0),
    ],
)
def test_positive_class_is_the_event_to_detect(names, positive_label, expected):
    assert positive_class(names, positive_label) == expected


def test_positive_class_is_never_guessed_from_names_it_cannot_read():
    with pytest.raises(ValueError, match=r"do not say which class .* set evaluation\.positive_label"):
        positive_class(["ade", "no_ade"])
    with pytest.raises(ValueError, match="quote yes/no/true/false labels"):
        positive_class(["no", "yes"], "True")


def test_training_data_with_one_class_is_named_as_such(tmp_path, ade_dir):
    one_class = tmp_path / "train.jsonl"
    one_class.write_text("".join(json.dumps({"text": f"sentence {i}", "label": 1}) + "\n" for i in range(4)))
    cfg = load_config(
        write_yaml(tmp_path, ade_dir), [f"data.train={one_class}", "data.eval=null", "data.test=null"]
    )
    with pytest.raises(
        ValueError, match=rf"{one_class} has one class: every row's 'label' is '1'; a classifier"
    ):
        build_task(cfg)


def test_validation_without_positives_is_refused_before_training(tmp_path, ade_dir):
    rows = [json.loads(line) for line in (ade_dir / "validation.jsonl").read_text().splitlines()]
    only_negative = tmp_path / "validation.jsonl"
    only_negative.write_text("".join(json.dumps(r) + "\n" for r in rows if r["label"] == 0))
    cfg = load_config(write_yaml(tmp_path, ade_dir), [f"data.eval={only_negative}"])
    with pytest.raises(ValueError, match=r"has no '1' examples; .* needs both classes"):
        build_task(cfg)


def test_word_tags_go_to_the_first_sub_token_only(tmp_path):
    from modernenc.tasks.classification_data import tokenize_words

    out = tokenize_words([["Aspirin", "caused", "rash"]], [["DRUG", "O", "O"]], ["O", "DRUG"], TOKENIZER, 64)
    # [CLS] A spir in Ġcaused Ġrash [SEP]: "Aspirin" is three sub-tokens, labelled on the first.
    assert out.labels[0].tolist() == [-100, 1, -100, -100, 0, 0, -100]
    assert len(out.input_ids[0]) == 7
    # A tokenizer.json that pads and truncates by itself must not pad packed rows or cut them silently.
    from tokenizers import Tokenizer

    custom = Tokenizer.from_file(str(TOKENIZER / "tokenizer.json"))
    custom.enable_padding(length=32, pad_id=50283, pad_token="[PAD]")
    custom.enable_truncation(max_length=5)
    custom.save(str(tmp_path / "tokenizer.json"))
    again = tokenize_words([["Aspirin", "caused", "rash"]], [["DRUG", "O", "O"]], ["O", "DRUG"], tmp_path, 64)
    assert again.input_ids[0].tolist() == out.input_ids[0].tolist()


def test_token_classification_runs_through_the_same_entry_point(tmp_path):
    from transformers import AutoModelForTokenClassification

    drugs = {"aspirin", "ibuprofen", "warfarin", "lithium"}
    sentences = [
        "Aspirin caused a rash .",
        "Lithium toxicity was seen .",
        "She took ibuprofen daily .",
        "Warfarin led to bleeding .",
        "The patient recovered fully .",
        "No drug was given .",
    ] * 4
    rows = [
        {"words": s.split(), "tags": ["DRUG" if w.lower() in drugs else "O" for w in s.split()]}
        for s in sentences
    ]
    for split in ("train", "validation"):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    yaml = write_yaml(tmp_path, tmp_path)
    cfg = load_config(
        yaml,
        [
            "model.task=token_classification",
            "data.test=null",
            "data.text_column=words",
            "data.label_column=tags",
            "data.micro_batch_size=8",
            "evaluation.positive_label=null",
        ],
    )
    run(cfg)
    best = tmp_path / "run" / "best-hf"
    model = AutoModelForTokenClassification.from_pretrained(best)
    assert model.config.id2label == {0: "DRUG", 1: "O"}  # sorted, as transformers' run_ner sorts them


def test_without_validation_the_final_model_is_exported(tmp_path, ade_dir):
    cfg = load_config(write_yaml(tmp_path, ade_dir), ["data.eval=null", "data.test=null", "max_duration=1ba"])
    run(cfg)
    final = tmp_path / "run" / "final-hf"
    assert AutoModelForSequenceClassification.from_pretrained(final).config.num_labels == 2
    assert (final / "tokenizer.json").is_file() and not (tmp_path / "run" / "best-hf").exists()


def test_test_split_without_validation_is_refused(tmp_path, ade_dir):
    cfg = load_config(write_yaml(tmp_path, ade_dir), ["data.eval=null"])
    with pytest.raises(ValueError, match="data.test is set but data.eval is not"):
        build_task(cfg)


@pytest.mark.parametrize("n, world", [(51, 2), (64, 2), (7, 3), (100, 4)])
def test_rank_batches_deal_every_example_once_in_equal_counts(n, world):
    from modernenc.tasks.classification_data import RankBatches

    lengths = np.random.default_rng(n).integers(3, 200, size=n)
    shares = [list(RankBatches(lengths, 8, world, rank)) for rank in range(world)]
    assert len({len(s) for s in shares}) == 1  # composer stops every rank when the first runs out
    seen = sorted(i for share in shares for batch in share for i in batch)
    assert seen == list(range(n))
    assert all(0 < len(batch) <= 8 for share in shares for batch in share)
    with pytest.raises(ValueError, match="2 evaluation examples cannot be shared by 3 ranks"):
        RankBatches([5, 6], 8, 3, 0)
