"""Per-precision decision rules: thresholds.json v2, `modernenc calibrate`, and `predict --dtype`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import cli_error, run_cli
from sklearn.metrics import recall_score
from test_tasks_predict import TEXTS, build_classifier, read_jsonl, write_jsonl

from modernenc.model import ModernEncoderConfig, ModernEncoderForMaskedLM
from modernenc.tasks.calibration import calibrate
from modernenc.tasks.classification_data import tokenize_texts
from modernenc.tasks.decisions import (
    read_thresholds,
    recorded_precisions,
    write_precision_rule,
    write_thresholds,
)
from modernenc.tasks.predict import load_classifier, predict_probabilities

TOKENIZER_DIR = build_classifier.__globals__["TOKENIZER_DIR"]
FP32_RULE = {"default": 0.5, "max_f1": 0.45, "target_recall": 0.3}


def validation_rows(n: int = 64) -> list[dict]:
    """Texts with labels; the tiny random model knows nothing, but thresholds only need both classes."""
    texts = [*TEXTS, *(f"{t} Follow-up {i}." for i, t in enumerate(TEXTS))][:n]
    return [{"sentence": t, "gold": ["no_ade", "ade"][i % 3 == 0]} for i, t in enumerate(texts)]


@pytest.fixture
def folder(tmp_path):
    return build_classifier(tmp_path / "clf", "mean")  # with the fp32 rule of FP32_RULE, target 0.95


@pytest.fixture
def validation(tmp_path):
    return write_jsonl(tmp_path / "validation.jsonl", validation_rows())


def int8_probabilities(folder, texts):
    model, tokenizer = load_classifier(folder, precision="int8")
    ids, _ = tokenize_texts(tokenizer, texts, 40, model.config.cls_token_id, model.config.sep_token_id)
    return predict_probabilities(model, ids, progress=False)


def test_a_version_1_file_is_read_as_the_fp32_rule(tmp_path):
    (tmp_path / "thresholds.json").write_text(
        json.dumps({"version": 1, "thresholds": {"default": 0.5, "t": 0.2}, "chosen": "t", "max_length": 64})
    )
    rule = read_thresholds(tmp_path)
    assert (rule.threshold, rule.precision, rule.max_length) == (0.2, "fp32", 64)
    assert read_thresholds(tmp_path, "int8") is None and recorded_precisions(tmp_path) == ["fp32"]
    (tmp_path / "thresholds.json").write_text('{"version": 3, "thresholds": {"default": 0.5}}')
    with pytest.raises(ValueError, match="format version 3; this modernenc reads up to 2"):
        read_thresholds(tmp_path)


def test_precision_rules_sit_beside_the_fp32_one_and_share_the_tasks_facts(tmp_path):
    write_thresholds(tmp_path, FP32_RULE, target_recall=0.9, label_names=["neg", "pos"], max_length=64)
    write_precision_rule(
        tmp_path, "int8", {"default": 0.5, "target_recall": 0.12}, calibration={"examples": 9}
    )
    data = json.loads((tmp_path / "thresholds.json").read_text())
    assert data["version"] == 2 and data["thresholds"] == FP32_RULE  # a v1 reader still finds fp32's rule
    assert data["variants"]["int8"] == {
        "thresholds": {"default": 0.5, "target_recall": 0.12},
        "chosen": "target_recall",
        "review_band": [0.06, 0.56],  # the default band around the chosen threshold, written explicitly
        "calibration": {"examples": 9},
    }
    int8 = read_thresholds(tmp_path, "int8")
    assert (int8.threshold, int8.precision, int8.calibration) == (0.12, "int8", {"examples": 9})
    assert (int8.label_names, int8.target_recall, int8.max_length) == (["neg", "pos"], 0.9, 64)
    assert read_thresholds(tmp_path).threshold == 0.3 and read_thresholds(tmp_path, "bf16") is None
    assert recorded_precisions(tmp_path) == ["fp32", "int8"]
    write_thresholds(tmp_path, FP32_RULE)  # fine-tuning again: new weights, a new file, no stale variants
    assert recorded_precisions(tmp_path) == ["fp32"]


def test_a_rule_edited_to_lose_its_chosen_key_is_refused_not_read_as_half(tmp_path):
    """Without "chosen", the rule fell back to "default": 0.5 where validation chose 0.12 for recall 0.95,
    and the file's review band, built around 0.12, stayed. Only an unambiguous file may leave it out."""
    write_thresholds(tmp_path, FP32_RULE)
    write_precision_rule(tmp_path, "int8", {"default": 0.5, "max_f1": 0.3, "target_recall": 0.12})
    data = json.loads((tmp_path / "thresholds.json").read_text())
    del data["variants"]["int8"]["chosen"]
    (tmp_path / "thresholds.json").write_text(json.dumps(data))
    assert read_thresholds(tmp_path).threshold == 0.3  # fp32's rule still says which
    with pytest.raises(
        ValueError,
        match=r"thresholds.json \(int8\) lists thresholds \['default', 'max_f1', 'target_recall'\] but not "
        r'which one decides: add "chosen": NAME',
    ):
        read_thresholds(tmp_path, "int8")
    del data["chosen"]
    (tmp_path / "thresholds.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"thresholds.json lists thresholds .* but not which one decides"):
        read_thresholds(tmp_path)
    (tmp_path / "thresholds.json").write_text('{"thresholds": {"hand_picked": 0.2}}')  # one: no doubt
    assert read_thresholds(tmp_path).threshold == 0.2


def test_calibrate_chooses_the_int8_threshold_on_int8_scores(folder, validation):
    before = read_thresholds(folder)
    result = calibrate(
        folder, validation, "int8", text_column="sentence", label_column="gold", progress=False
    )
    rule = read_thresholds(folder, "int8")
    assert rule == result.rule and read_thresholds(folder) == before  # fp32's rule is untouched
    rows = validation_rows()
    y = np.array([r["gold"] == "ade" for r in rows])
    probs = int8_probabilities(folder, [r["sentence"] for r in rows])
    # The highest threshold reaching the target, as sklearn counts recall: one score higher misses it.
    t = rule.thresholds["target_recall"]
    assert recall_score(y, probs >= t) >= 0.95
    chosen_score = probs[probs >= t].min()
    assert recall_score(y, probs >= probs[probs > chosen_score].min()) < 0.95
    assert rule.review_band == pytest.approx((t / 2, t + (1 - t) / 2))
    assert rule.calibration["examples"] == len(rows) and rule.calibration["int8_activation_bits"] in (7, 8)
    assert rule.calibration["int8_kernel"] in torch.backends.quantized.supported_engines
    assert result.fp32_threshold == before.threshold


def test_predict_warns_when_int8_thresholds_come_from_another_int8_setup(folder, tmp_path, caplog):
    """int8 probabilities depend on the activation bits and the kernel: a rule calibrated under another
    setup is used, with a warning that names what changed. A rule recorded before the kernel was (every
    such modernenc used x86) counts as x86's."""
    import modernenc.model.precision as precision

    src = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in TEXTS[:3]])
    here = precision.int8_setup()
    cases = [
        (here, None),
        ({**here, "int8_kernel": "fbgemm"}, f"int8_kernel fbgemm -> {here['int8_kernel']}"),
        ({"int8_activation_bits": 15 - here["int8_activation_bits"]}, "int8_activation_bits"),
    ]
    for i, (calibration, expected) in enumerate(cases):
        write_precision_rule(folder, "int8", {"default": 0.5, "target_recall": 0.4}, calibration=calibration)
        caplog.clear()
        assert run_cli("predict", folder, src, "--out", tmp_path / f"out{i}.jsonl", "--dtype", "int8") == 0
        warned = [r.getMessage() for r in caplog.records if "another int8 setup" in r.getMessage()]
        if expected is None:
            assert warned == []
        else:
            assert len(warned) == 1 and expected in warned[0]
    old = {"int8_activation_bits": here["int8_activation_bits"]}  # no kernel recorded
    write_precision_rule(folder, "int8", {"default": 0.5, "target_recall": 0.4}, calibration=old)
    for kernel, warns in (("x86", False), ("onednn", True)):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(precision, "int8_engine", lambda kernel=kernel: kernel)
            from modernenc.tasks.predict import warn_if_calibrated_elsewhere

            assert warn_if_calibrated_elsewhere(read_thresholds(folder, "int8")) is warns


def test_predict_uses_the_threshold_recorded_for_its_precision(folder, validation, tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in TEXTS])
    out = tmp_path / "out.jsonl"
    message = cli_error(capsys, "predict", folder, src, "--out", out, "--dtype", "int8")
    assert message == (
        f"modernenc predict: error: {folder}/thresholds.json records thresholds for fp32 only, not for int8: "
        "the int8 model's probabilities differ from fp32's, so its thresholds must be chosen on its own "
        f"validation scores. Run `modernenc calibrate {folder} --dtype int8 --validation FILE`, or pass "
        "--threshold"
    )
    assert not out.exists()
    assert run_cli("predict", folder, src, "--out", out, "--dtype", "int8", "--threshold", "0.4") == 0
    assert all(r["label"] == ("ade" if r["probability"] >= 0.4 else "no_ade") for r in read_jsonl(out))

    assert run_cli(
        "calibrate", folder, "--dtype", "int8", "--validation", validation, "--text-column", "sentence",
        "--label-column", "gold",
    ) == 0  # fmt: skip
    assert "int8: threshold" in capsys.readouterr().out
    t = read_thresholds(folder, "int8").threshold
    assert run_cli("predict", folder, src, "--out", out, "--dtype", "int8", "--force") == 0
    assert f"at threshold {t:.4g} from thresholds.json (int8, 'target_recall')" in capsys.readouterr().out
    rows = read_jsonl(out)
    expected = int8_probabilities(folder, TEXTS)
    assert [r["probability"] for r in rows] == pytest.approx(expected.tolist(), abs=1e-6)
    assert [r["label"] for r in rows] == ["ade" if p >= t else "no_ade" for p in expected]


def test_calibrate_refuses_bad_input_in_one_sentence_and_writes_nothing(folder, tmp_path, capsys):
    rule_file = folder / "thresholds.json"
    before = rule_file.read_bytes()
    rows = validation_rows()
    no_label = write_jsonl(tmp_path / "no_label.jsonl", [{"sentence": r["sentence"]} for r in rows])
    with_unknown = [{**r, "gold": "maybe"} if i == 3 else r for i, r in enumerate(rows)]
    unknown = write_jsonl(tmp_path / "unknown.jsonl", with_unknown)
    one_class = write_jsonl(tmp_path / "one_class.jsonl", [{**r, "gold": "ade"} for r in rows])
    args = ["--text-column", "sentence", "--label-column", "gold"]

    def error(*argv):
        return cli_error(capsys, "calibrate", *argv).removeprefix("modernenc calibrate: error: ")

    assert error(folder, "--dtype", "int8", "--validation", no_label, *args) == (
        f"{no_label}:1 has no column 'gold'; its columns are: 'sentence' (choose others with --text-column / "
        "--label-column)"
    )
    assert error(folder, "--dtype", "int8", "--validation", unknown, *args) == (
        f"{unknown} has gold values ['maybe'] that {folder} does not know; its labels are ['no_ade', 'ade']"
    )
    assert error(folder, "--dtype", "int8", "--validation", one_class, *args) == (
        f"{one_class} has no 'no_ade' examples; choosing a threshold for a target recall needs both classes"
    )
    good = write_jsonl(tmp_path / "good.jsonl", rows)
    assert error(folder, "--dtype", "fp32", "--validation", good, *args) == (
        f"{rule_file} already records fp32 thresholds; pass --force to choose them again and replace them"
    )
    assert error(folder, "--dtype", "int8", "--validation", good, *args, "--target-recall", "0.8") == (
        "thresholds.json's rules are chosen for target recall 0.95; every precision is held to the same "
        "target (leave out --target-recall)"
    )
    mlm = tmp_path / "mlm"
    config = ModernEncoderConfig(
        hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4
    )
    ModernEncoderForMaskedLM(config).save_pretrained(mlm, tokenizer_path=TOKENIZER_DIR)
    assert error(mlm, "--dtype", "int8", "--validation", good, *args) == (
        f"{mlm} is not a fine-tuned sequence classifier (its config.json names ModernBertForMaskedLM, not "
        "ModernBertForSequenceClassification): thresholds are calibrated for a binary text classifier"
    )
    assert rule_file.read_bytes() == before
    assert run_cli("calibrate", folder, "--dtype", "int4", "--validation", good) == 2  # argparse: choices
    assert (
        "argument --dtype: invalid choice: 'int4' (choose from 'fp32', 'bf16', 'int8')"
        in capsys.readouterr().err
    )


def test_without_a_file_fp32_comes_first_then_the_others(tmp_path, validation, capsys):
    folder = build_classifier(tmp_path / "clf", "cls", threshold_file=False)
    message = cli_error(
        capsys, "calibrate", folder, "--dtype", "int8", "--validation", validation,
        "--text-column", "sentence", "--label-column", "gold",
    )  # fmt: skip
    assert message.endswith(
        f"{folder}/thresholds.json does not exist: the int8 rule is recorded beside the fp32 one that "
        f"fine-tuning writes. Record that first: modernenc calibrate {folder} --dtype fp32 --validation FILE"
    )
    args = ["--text-column", "sentence", "--label-column", "gold"]
    with pytest.raises(
        ValueError, match=r"the labels \['no_ade', 'ade'\] do not say which class .* --positive"
    ):
        calibrate(folder, validation, "fp32", text_column="sentence", label_column="gold")
    fp32 = calibrate(
        folder, validation, "fp32", text_column="sentence", label_column="gold", target_recall=0.9,
        positive_label="ade",
    )  # fmt: skip
    assert fp32.rule.target_recall == 0.9 and fp32.rule.label_names == ["no_ade", "ade"]
    assert fp32.rule.positive_label == 1
    assert fp32.rule.max_length == 40  # the model's context, recorded so every precision truncates alike
    assert run_cli("calibrate", folder, "--dtype", "bf16", "--validation", validation, *args) == 0
    assert recorded_precisions(folder) == ["fp32", "bf16"]
    assert read_thresholds(folder, "bf16").target_recall == 0.9


def test_rules_of_replaced_weights_give_way_to_a_new_fp32_rule_only(folder, validation):
    calibrate(folder, validation, "int8", text_column="sentence", label_column="gold", progress=False)
    from modernenc.model import ModernEncoderForSequenceClassification

    model = ModernEncoderForSequenceClassification.from_pretrained(folder)
    model.classifier.bias.data += 1.0  # new weights: every recorded rule is now stale
    model.save_pretrained(folder, overwrite=True)
    with pytest.raises(
        ValueError, match="was chosen for other weights than the folder holds now: the int8 rule"
    ):
        calibrate(folder, validation, "int8", text_column="sentence", label_column="gold", progress=False)
    calibrate(folder, validation, "fp32", text_column="sentence", label_column="gold", progress=False)
    assert recorded_precisions(folder) == ["fp32"]  # the stale int8 rule is gone
    assert read_thresholds(folder).label_names == ["no_ade", "ade"]  # the task's facts carried over
