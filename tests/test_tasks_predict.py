"""Batch prediction: packed, length-sorted inference agrees with transformers run one text at a time."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from conftest import SHARED_DATA, cli_error, run_cli
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from modernenc.cli import main
from modernenc.model import (
    ModernEncoderConfig,
    ModernEncoderForMaskedLM,
    ModernEncoderForSequenceClassification,
)
from modernenc.tasks.classification_data import tokenize_texts
from modernenc.tasks.decisions import (
    DecisionRule,
    default_review_band,
    read_thresholds,
    resolve_decision,
    write_thresholds,
)
from modernenc.tasks.predict import load_classifier, predict_file, predict_probabilities, read_inputs

TOKENIZER_DIR = SHARED_DATA / "tokenizers" / "modernbert"
MAX_LENGTH = 40  # small, so the long text below gets truncated
TEXTS = [
    "Aspirin caused severe nausea.",
    "The patient was given 5 mg of warfarin daily for atrial fibrillation without complications.",
    "?",  # one token: [CLS] ? [SEP]
    "Rash.",
    "Hepatotoxicity développée après l'administration de paracétamol à forte dose — naïve patient 😷.",
    "Long " + "treatment with methotrexate led to pancytopenia and " * 8 + "hospitalisation.",
    "No adverse events were observed.",
    "Stevens-Johnson syndrome following carbamazepine therapy.",
    *[f"Case {i}: {'the drug was well tolerated ' * (i % 4)}after dose {i}." for i in range(24)],
]
THRESHOLD, BAND = 0.3, (0.2, 0.6)


def build_classifier(folder, pooling, threshold_file=True, **config_overrides):
    torch.manual_seed(0)
    config = ModernEncoderConfig(
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        global_attn_every_n_layers=2,
        local_attention=8,  # windows shorter than most texts: exercises local attention on packed input
        max_position_embeddings=MAX_LENGTH,
        classifier_pooling=pooling,
        id2label={0: "no_ade", 1: "ade"},
        initializer_range=0.5,  # large random weights: CLS states differ, probabilities spread over (0, 1)
        **config_overrides,
    )
    model = ModernEncoderForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.normal_(0, 0.2)
    model.save_pretrained(folder, tokenizer_path=TOKENIZER_DIR)
    if threshold_file:
        write_thresholds(
            folder,
            {"default": 0.5, "max_f1": 0.45, "target_recall": THRESHOLD},
            chosen="target_recall",
            target_recall=0.95,
            review_band=BAND,
        )
    return folder


@pytest.fixture(scope="module")
def classifiers(tmp_path_factory):
    """pooling -> model folder, each built once for the module."""
    cache = {}

    def get(pooling):
        if pooling not in cache:
            cache[pooling] = build_classifier(tmp_path_factory.mktemp(f"clf-{pooling}"), pooling)
        return cache[pooling]

    return get


@pytest.fixture
def model_dir(classifiers):
    return classifiers("mean")


def reference_probabilities(folder, texts):
    """transformers' own model and tokenizer on the same folder, one text at a time: no packing, no sort."""
    hf = AutoModelForSequenceClassification.from_pretrained(folder, attn_implementation="sdpa").eval()
    tok = AutoTokenizer.from_pretrained(folder)
    probs = []
    with torch.no_grad():
        for text in texts:
            batch = tok(text, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
            probs.append(float(hf(**batch).logits.softmax(-1)[0, 1]))
    return probs


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("pooling", ["mean", "cls"])  # cls pooling reads packed offsets: test both
def test_packed_sorted_predictions_match_transformers(pooling, classifiers, tmp_path, caplog):
    model_dir = classifiers(pooling)
    rows = [{"id": f"s{i}", "text": t, "label": i % 2} for i, t in enumerate(TEXTS)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    summary = predict_file(model_dir, src, tmp_path / "out.jsonl", batch_size=7, progress=False)
    out = read_jsonl(tmp_path / "out.jsonl")

    assert [r["id"] for r in out] == [r["id"] for r in rows]  # input order restored after sorting
    assert [r["text"] for r in out] == TEXTS
    assert [r["input_label"] for r in out] == [r["label"] for r in rows]  # gold label kept, renamed
    expected = reference_probabilities(model_dir, TEXTS)
    got = [r["probability"] for r in out]
    assert max(abs(a - b) for a, b in zip(got, expected, strict=True)) < 1e-4
    assert min(got) < BAND[0] < BAND[1] < max(got)  # the probabilities spread past the band

    for r in out:  # decisions follow thresholds.json
        assert r["label"] == ("ade" if r["probability"] >= THRESHOLD else "no_ade")
        assert r["needs_review"] == (BAND[0] <= r["probability"] <= BAND[1])
    assert summary.threshold == THRESHOLD and summary.review_band == BAND
    assert summary.flagged == sum(r["label"] == "ade" for r in out)
    assert summary.needs_review == sum(r["needs_review"] for r in out)
    assert (
        summary.truncated == 1
        and "1 of 32 texts were longer than 40 tokens and were truncated" in caplog.text
    )
    # Every row says whether the model saw all of it; the truth: transformers' own token count.
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    cut = [len(tokenizer(t)["input_ids"]) > MAX_LENGTH for t in TEXTS]
    assert [r["truncated"] for r in out] == cut and sum(cut) == 1


def test_txt_and_csv_inputs_give_the_same_probabilities(model_dir, tmp_path):
    texts = [t for t in TEXTS if t.strip()]  # blank lines of a .txt are skipped
    (tmp_path / "in.txt").write_text("\n".join(texts[:5]) + "\n\n" + "\n".join(texts[5:]) + "\n")
    with (tmp_path / "in.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["doc_id", "sentence"])
        writer.writerows([[i, t] for i, t in enumerate(texts)])
    predict_file(model_dir, tmp_path / "in.txt", tmp_path / "from_txt.jsonl", progress=False)
    predict_file(
        model_dir, tmp_path / "in.csv", tmp_path / "from_csv.csv", text_column="sentence", progress=False
    )
    from_txt = read_jsonl(tmp_path / "from_txt.jsonl")
    with (tmp_path / "from_csv.csv").open(newline="", encoding="utf-8") as f:
        from_csv = list(csv.DictReader(f))
    assert [r["text"] for r in from_txt] == texts and [r["sentence"] for r in from_csv] == texts
    assert [r["line"] for r in from_txt][4:7] == [5, 7, 8]  # line numbers point into the file
    assert [r["doc_id"] for r in from_csv] == [str(i) for i in range(len(texts))]
    assert list(from_csv[0]) == ["doc_id", "sentence", "probability", "label", "needs_review", "truncated"]
    for a, b in zip(from_txt, from_csv, strict=True):
        assert abs(a["probability"] - float(b["probability"])) < 1e-12
        assert str(a["needs_review"]) == b["needs_review"] and a["label"] == b["label"]


def test_batch_size_and_bf16_do_not_change_results_much(model_dir):
    model, tokenizer = load_classifier(model_dir)
    ids, truncated = tokenize_texts(
        tokenizer, [*TEXTS, ""], MAX_LENGTH, model.config.cls_token_id, model.config.sep_token_id
    )  # "" ([CLS][SEP] only) is refused by predict_file but must not break a packed batch
    assert truncated == 1 and max(map(len, ids)) == MAX_LENGTH and ids[-1] == [50281, 50282]
    one = predict_probabilities(model, ids, batch_size=5, progress=False)  # 7 batches, last one short
    many = predict_probabilities(model, ids, batch_size=64, progress=False)
    bf16 = predict_probabilities(load_classifier(model_dir, precision="bf16")[0], ids, progress=False)
    assert abs(one - many).max() < 1e-5  # packing neighbours must not leak into a sequence
    # bf16 keeps ~3 significant digits; the test model's large random weights amplify that.
    assert abs(one - bf16).max() < 0.15


def test_thresholds_file_round_trip_and_overrides(tmp_path):
    path = write_thresholds(
        tmp_path,
        {"default": 0.5, "max_f1": 0.4, "target_recall": 0.2},
        target_recall=0.95,
        label_names=["no_ade", "ade"],
    )
    data = json.loads(path.read_text())
    assert data["chosen"] == "target_recall" and data["review_band"] == [0.1, 0.6]
    rule = read_thresholds(tmp_path)
    assert rule.threshold == 0.2 and rule.label_names == ["no_ade", "ade"] and rule.review_band == (0.1, 0.6)
    assert resolve_decision(rule) == (0.2, (0.1, 0.6), "thresholds.json ('target_recall')")
    # --threshold moves the decision away from the file's band, so the band follows the new threshold.
    assert resolve_decision(rule, threshold=0.5)[:2] == (0.5, (0.25, 0.75))
    assert resolve_decision(rule, review_band=[0.05, 0.9])[1] == (0.05, 0.9)
    assert resolve_decision(None) == (0.5, default_review_band(0.5), "default (no thresholds.json)")
    assert read_thresholds(tmp_path / "elsewhere") is None
    with pytest.raises(ValueError, match="chosen='nope'"):
        write_thresholds(tmp_path, {"default": 0.5}, chosen="nope")
    with pytest.raises(ValueError, match="lo <= hi"):
        resolve_decision(DecisionRule(), review_band=[0.8, 0.2])
    (tmp_path / "thresholds.json").write_text('{"thresholds": {"default": 1.5}}')
    with pytest.raises(ValueError, match=r"thresholds\['default'\] must be a number in \[0, 1\]"):
        read_thresholds(tmp_path)


def test_no_thresholds_file_means_half_and_default_band(tmp_path):
    folder = build_classifier(tmp_path / "clf", "mean", threshold_file=False)
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in TEXTS])
    summary = predict_file(folder, src, tmp_path / "out.jsonl", progress=False)
    assert summary.threshold == 0.5 and summary.review_band == (0.25, 0.75)
    for r in read_jsonl(tmp_path / "out.jsonl"):
        assert r["label"] == ("ade" if r["probability"] >= 0.5 else "no_ade")
        assert r["needs_review"] == (0.25 <= r["probability"] <= 0.75)


def test_input_errors_name_the_problem(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [{"sentence": "a", "pmid": 1}])
    with pytest.raises(ValueError, match=r"no column 'text'; its columns are: 'sentence', 'pmid'"):
        read_inputs(src)
    (tmp_path / "in.csv").write_text("pmid,sentence\n1,hello\n")
    with pytest.raises(ValueError, match=r"no column 'body'; its columns are: 'pmid', 'sentence'"):
        read_inputs(tmp_path / "in.csv", "body")
    for name in ("empty.txt", "empty.jsonl", "empty.csv"):
        (tmp_path / name).write_text("\n")
        with pytest.raises(ValueError, match="holds no rows"):
            read_inputs(tmp_path / name)
    with pytest.raises(ValueError, match=r"supported inputs are \.txt, \.jsonl, \.json, \.csv, \.parquet"):
        read_inputs(tmp_path / "in.xlsx")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_inputs(tmp_path / "missing.txt")
    (tmp_path / "blank.csv").write_text('text\nfine\n""\nok\n" "\n')
    with pytest.raises(ValueError, match=r"blank\.csv: 2 row\(s\) have an empty 'text' \(rows 2, 4\)"):
        read_inputs(tmp_path / "blank.csv")


def test_cli_refuses_to_overwrite_without_force(model_dir, tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in TEXTS[:4]])
    out = tmp_path / "out.jsonl"
    out.write_text("keep me\n")
    message = cli_error(capsys, "predict", str(model_dir), str(src), "--out", str(out))
    assert message == f"modernenc predict: error: the --out {out} already exists; pass --force to replace it"
    message = cli_error(capsys, "predict", str(model_dir), str(src), "--out", str(out), "--force")
    assert message == (  # not predictions modernenc wrote: kept even with --force
        f"modernenc predict: error: refusing to replace {out} even with --force: modernenc has no record "
        f"of writing it (no entry in {tmp_path / '.modernenc-outputs.json'}). Move it away or choose "
        "another --out"
    )
    assert out.read_text() == "keep me\n"

    out.unlink()
    main(["predict", str(model_dir), str(src), "--out", str(out)])
    main(["predict", str(model_dir), str(src), "--out", str(out), "--force", "--threshold", "0.5"])
    assert len(read_jsonl(out)) == 4
    printed = capsys.readouterr().out
    assert "examples/s" in printed and "flagged positive at threshold 0.5 from --threshold" in printed
    assert "need review" in printed


def test_cli_help_and_missing_column(model_dir, tmp_path, capsys):
    assert run_cli("predict", "--help") == 0
    text = capsys.readouterr().out
    assert "--review-band LO HI" in text and "Example: modernenc predict" in text
    src = write_jsonl(tmp_path / "in.jsonl", [{"sentence": "a"}])
    message = cli_error(capsys, "predict", str(model_dir), str(src), "--out", str(tmp_path / "o.jsonl"))
    assert "no column 'text'; its columns are: 'sentence'" in message
    assert not (tmp_path / "o.jsonl").exists()


def test_a_model_without_a_fine_tuned_classifier_is_refused(tmp_path):
    """An MLM export would load with a random classifier; predicting with it must fail, not guess."""
    mlm = tmp_path / "mlm"
    config = ModernEncoderConfig(
        hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4
    )
    ModernEncoderForMaskedLM(config).save_pretrained(mlm, tokenizer_path=TOKENIZER_DIR)
    with pytest.raises(ValueError, match="holds a ModernBertForMaskedLM checkpoint, not a fine-tuned"):
        load_classifier(mlm)


def test_thresholds_of_replaced_weights_are_refused_not_applied(tmp_path):
    folder = build_classifier(tmp_path / "clf", "cls")
    assert read_thresholds(folder) is not None
    other = ModernEncoderForSequenceClassification(
        ModernEncoderForSequenceClassification.from_pretrained(folder).config
    )
    other.save_pretrained(folder, overwrite=True)  # new weights under the old rule
    with pytest.raises(
        ValueError, match=r"thresholds.json was chosen for other weights than .*model.safetensors"
    ):
        read_thresholds(folder)
    # The remedies it names work; it named --threshold too, which fails on this same check.
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in TEXTS[:2]])
    with pytest.raises(ValueError, match=r"\(fine-tune, or `modernenc calibrate`\) or remove the file$"):
        predict_file(folder, src, tmp_path / "out.jsonl", threshold=0.3, progress=False)
    (folder / "thresholds.json").unlink()
    assert predict_file(folder, src, tmp_path / "out.jsonl", threshold=0.3, progress=False).examples == 2


def test_txt_keeps_odd_line_breaks_in_a_text_and_predict_reads_its_own_output(model_dir, tmp_path):
    texts = ["Rash after\x0cpenicillin.", "Nausea\u2028and vomiting.", "No adverse events."]
    (tmp_path / "in.txt").write_text(f"{texts[0]}\r\n\n{texts[1]}\n{texts[2]}\n", encoding="utf-8")
    rows = read_inputs(tmp_path / "in.txt")
    assert [(r["line"], r["text"]) for r in rows] == [(1, texts[0]), (3, texts[1]), (4, texts[2])]
    first = tmp_path / "first.jsonl"
    predict_file(model_dir, tmp_path / "in.txt", first, progress=False)
    assert "\u2028" in first.read_text(encoding="utf-8")  # written raw (ensure_ascii=False)
    again = tmp_path / "again.jsonl"
    predict_file(model_dir, first, again, progress=False)  # the output is a valid input
    out = [json.loads(line) for line in again.read_text(encoding="utf-8").split("\n") if line]
    assert [r["text"] for r in out] == texts and [r["line"] for r in out] == [1, 3, 4]


def test_a_bom_does_not_reach_the_first_text(model_dir, tmp_path):
    texts = ["Aspirin caused severe nausea.", "Rash."]
    (tmp_path / "plain.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    (tmp_path / "bom.txt").write_text("\n".join(texts) + "\n", encoding="utf-8-sig")
    assert (tmp_path / "bom.txt").read_bytes().startswith(b"\xef\xbb\xbf")
    assert [r["text"] for r in read_inputs(tmp_path / "bom.txt")] == texts
    for name in ("plain", "bom"):
        predict_file(model_dir, tmp_path / f"{name}.txt", tmp_path / f"{name}.jsonl", progress=False)
    assert read_jsonl(tmp_path / "bom.jsonl") == read_jsonl(tmp_path / "plain.jsonl")


def test_a_bad_or_missing_device_is_a_clear_error(model_dir, tmp_path, monkeypatch, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "Rash."}])
    out = tmp_path / "out.jsonl"
    message = cli_error(capsys, "predict", str(model_dir), str(src), "--out", str(out), "--device", "tpu")
    assert message == (
        "modernenc predict: error: unknown device 'tpu'; choose auto, cpu, cuda or cuda:N (e.g. cuda:1)"
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without a GPU
    message = cli_error(capsys, "predict", str(model_dir), str(src), "--out", str(out), "--device", "cuda")
    assert message == (
        "modernenc predict: error: --device cuda: no CUDA device is available; use --device cpu"
    )
    assert not out.exists()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"--device cuda:1: this machine has 1 CUDA device\(s\)"):
        predict_file(model_dir, src, out, device="cuda:1", progress=False)


def test_predict_truncates_like_the_validation_that_chose_the_threshold(tmp_path):
    folder = build_classifier(tmp_path / "clf", "mean", threshold_file=False)
    write_thresholds(folder, {"default": 0.5}, chosen="default", max_length=12)
    assert read_thresholds(folder).max_length == 12
    model, tokenizer = load_classifier(folder)
    cls_id, sep_id = model.config.cls_token_id, model.config.sep_token_id
    long_text = TEXTS[5]
    cut, _ = tokenize_texts(tokenizer, [long_text], 12, cls_id, sep_id)
    whole, _ = tokenize_texts(tokenizer, [long_text], MAX_LENGTH, cls_id, sep_id)
    expected, untruncated = (predict_probabilities(model, ids, progress=False)[0] for ids in (cut, whole))
    assert abs(expected - untruncated) > 1e-3  # the cut matters for this text
    summary = predict_file(
        folder, write_jsonl(tmp_path / "in.jsonl", [{"text": long_text}]), tmp_path / "o.jsonl"
    )
    assert summary.truncated == 1
    assert read_jsonl(tmp_path / "o.jsonl")[0]["probability"] == pytest.approx(expected, abs=1e-6)


def test_texts_are_framed_with_the_tokenizers_special_ids_as_in_fine_tuning(tmp_path, caplog):
    """A config whose [CLS]/[SEP] ids disagree with its tokenizer's (a model trained before train.py took
    them from data.tokenizer): fine-tuning framed texts with the tokenizer's, and so does transformers."""
    folder = build_classifier(tmp_path / "clf", "cls", cls_token_id=5, sep_token_id=6)
    texts = TEXTS[:6]
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in texts])
    predict_file(folder, src, tmp_path / "out.jsonl", progress=False)
    got = [r["probability"] for r in read_jsonl(tmp_path / "out.jsonl")]
    expected = reference_probabilities(folder, texts)
    assert max(abs(a - b) for a, b in zip(got, expected, strict=True)) < 1e-4
    assert "config.json says cls_token_id=5 but its tokenizer's [CLS] is 50281" in caplog.text


def test_a_training_checkpoint_given_as_the_model_folder_says_what_to_pass(tmp_path, capsys):
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "Rash after amoxicillin."}])
    checkpoint = tmp_path / "latest-rank0.pt"
    checkpoint.write_bytes(b"a checkpoint")
    message = cli_error(capsys, "predict", checkpoint, src, "--out", tmp_path / "p.jsonl")
    assert message == (
        f"modernenc predict: error: {checkpoint} is a training checkpoint, not a model folder; export it "
        f"first (modernenc export-hf {checkpoint} OUT_FOLDER --tokenizer TOKENIZER) and pass OUT_FOLDER"
    )


def poison_token(folder, model_class, word):
    """Make the embedding of `word`'s token NaN, as a broken conversion or an overflow would: every text
    holding it then gets NaN probabilities, and no other text does (each is scored in its own batch)."""
    from tokenizers import Tokenizer

    (token,) = Tokenizer.from_file(str(folder / "tokenizer.json")).encode(word, add_special_tokens=False).ids
    model = model_class.from_pretrained(folder)
    with torch.no_grad():
        model.model.embeddings.tok_embeddings.weight[token] = float("nan")
    model.save_pretrained(folder, overwrite=True)
    return folder


def test_nan_probabilities_are_refused_naming_the_rows_not_read_as_no_event(tmp_path, capsys):
    """NaN >= threshold is False and the argmax of NaN tags is "O": without the check, predict wrote
    probability NaN (not even valid JSON) with the negative label and no review flag, and no spans."""
    from modernenc.model import ModernEncoderForTokenClassification

    def error(*argv):  # the last line of stderr: the progress bar comes before it
        capsys.readouterr()
        assert run_cli(*argv) == 1
        return capsys.readouterr().err.strip().splitlines()[-1]

    healthy = build_classifier(tmp_path / "healthy", "mean")
    poisoned = poison_token(
        build_classifier(tmp_path / "clf", "mean", threshold_file=False),
        ModernEncoderForSequenceClassification,
        " hepatitis",
    )
    config = ModernEncoderConfig(
        hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, local_attention=8,
        max_position_embeddings=MAX_LENGTH, num_labels=3, id2label={0: "O", 1: "B-AE", 2: "I-AE"},
    )  # fmt: skip
    ModernEncoderForTokenClassification(config).save_pretrained(
        tmp_path / "tagger", tokenizer_path=TOKENIZER_DIR
    )
    tagger = poison_token(tmp_path / "tagger", ModernEncoderForTokenClassification, " hepatitis")
    lines = ["Aspirin caused severe nausea.", "", "Acute hepatitis after isoniazid.", "Rash."]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n")
    write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in lines if t])
    out = tmp_path / "out.jsonl"
    tail = "which would read as 'no event' (or 'no span'); nothing was written"
    for model, extra in (
        (poisoned, ()),
        (tagger, ()),
        (healthy, ("--threshold", "0", "--with-spans", tagger)),
    ):
        message = error("predict", model, tmp_path / "in.txt", "--out", out, "--batch-size", 1, *extra)
        where = "rows in input order: 2" if extra else f"lines of {tmp_path / 'in.txt'}: 3"
        assert message.startswith(f"modernenc predict: error: {extra[-1] if extra else model} returned")
        assert f"returned NaN or infinite probabilities for 1 of 3 texts ({where}), {tail}" in message
        assert not out.exists()
    message = error("predict", poisoned, tmp_path / "in.jsonl", "--out", out, "--batch-size", 1)
    assert f"for 1 of 3 texts (rows of {tmp_path / 'in.jsonl'}: 2)" in message and not out.exists()
    write_jsonl(
        tmp_path / "val.jsonl",
        [{"text": t, "label": ("no_ade", "ade")[i % 2]} for i, t in enumerate(lines * 2) if t],
    )
    validation = ("--validation", tmp_path / "val.jsonl", "--batch-size", 1, "--positive-label", "ade")
    message = error("calibrate", poisoned, "--dtype", "fp32", *validation)
    assert f"for 2 of 6 texts (rows of {tmp_path / 'val.jsonl'}: 2, 5), {tail}" in message
    assert not (poisoned / "thresholds.json").exists()


def test_parquet_columns_json_lacks_are_written_not_a_crash_after_the_work(model_dir, tmp_path):
    """A case export's parquet has timestamps, dates, decimals and missing numbers (NaN). Predict keeps
    every input column; json.dumps raised TypeError on the first datetime after the whole run (nothing
    written) and wrote NaN, which is not JSON, for the missing ones."""
    import datetime
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    received = datetime.datetime(2024, 3, 1, 9, 30, tzinfo=datetime.timezone.utc)
    onset = datetime.date(2024, 2, 27)
    table = pa.table(
        {
            "text": TEXTS[:3],
            "received": [received, received, None],
            "report": [{"onset": onset, "dose_mg": 5.0}, {"onset": None, "dose_mg": float("nan")}, None],
            "weight_kg": [decimal.Decimal("71.25"), None, decimal.Decimal("80.00")],
            "label": [1.0, float("nan"), 0.0],
        }
    )
    pq.write_table(table, tmp_path / "cases.parquet")

    def strict(text):  # what jq, Spark or a browser accept: no NaN or Infinity
        return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))

    predict_file(model_dir, tmp_path / "cases.parquet", tmp_path / "out.jsonl", progress=False)
    rows = [strict(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and [r["text"] for r in rows] == TEXTS[:3]
    assert [r["received"] for r in rows] == ["2024-03-01T09:30:00+00:00", "2024-03-01T09:30:00+00:00", None]
    assert [r["report"] for r in rows] == [
        {"onset": "2024-02-27", "dose_mg": 5.0},
        {"onset": None, "dose_mg": None},
        None,
    ]
    assert [r["weight_kg"] for r in rows] == ["71.25", None, "80.00"]  # str keeps a decimal exact
    assert [r["input_label"] for r in rows] == [1.0, None, 0.0]
    predict_file(model_dir, tmp_path / "cases.parquet", tmp_path / "out.csv", progress=False)
    with (tmp_path / "out.csv").open(newline="") as f:
        cells = list(csv.DictReader(f))
    assert len(cells) == 3 and strict(cells[1]["report"]) == {"onset": None, "dose_mg": None}
    assert strict(cells[0]["report"]) == {"onset": "2024-02-27", "dose_mg": 5.0}


def test_rescoring_a_predictions_file_keeps_every_input_value(model_dir, tmp_path):
    """An output read back in (to rescore it with int8, say) holds the gold input_label and the earlier
    label; renaming that label to input_label overwrote the gold one without a word."""
    gold = ["no_ade", "ade", "no_ade"]
    src = write_jsonl(
        tmp_path / "in.jsonl", [{"text": t, "label": g} for t, g in zip(TEXTS[:3], gold, strict=True)]
    )
    predict_file(model_dir, src, tmp_path / "first.jsonl", threshold=0.0, progress=False)  # all "ade"
    first = read_jsonl(tmp_path / "first.jsonl")
    predict_file(model_dir, tmp_path / "first.jsonl", tmp_path / "again.jsonl", progress=False)
    again = read_jsonl(tmp_path / "again.jsonl")
    assert [r["input_label"] for r in again] == gold  # before the fix: ["ade", "ade", "ade"]
    assert [r["input_input_label"] for r in again] == ["ade"] * 3
    assert [r["input_probability"] for r in again] == [r["probability"] for r in first]
    from modernenc.tasks.predict import keep_input_columns  # the rule --with-spans uses for "spans"

    assert keep_input_columns({"spans": [1], "input_spans": [2], "id": 7}, ("spans",)) == {
        "input_input_spans": [1],
        "input_spans": [2],
        "id": 7,
    }


def test_a_bert_classifier_is_named_as_not_modernbert_not_sent_off_to_be_fine_tuned(tmp_path, capsys):
    """A transformers BERT classifier is fine-tuned, just not ModernBERT: predict said its classifier would
    be random and to fine-tune it first, calibrate that it was no fine-tuned classifier."""
    import shutil

    from transformers import BertConfig, BertForSequenceClassification

    folder = tmp_path / "bert"
    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37)
    BertForSequenceClassification(config).save_pretrained(folder)
    shutil.copy(TOKENIZER_DIR / "tokenizer.json", folder / "tokenizer.json")
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "Rash.", "label": 1}, {"text": "Fine.", "label": 0}])
    expected = (
        f"error: {folder} holds a BertForSequenceClassification model, not ModernBERT; modernenc runs "
        "ModernBERT checkpoints (model_type 'modernbert') only"
    )
    for command in (
        ("predict", folder, src, "--out", tmp_path / "out.jsonl"),
        ("calibrate", folder, "--dtype", "fp32", "--validation", src),
        ("export-onnx", folder, tmp_path / "onnx"),
    ):
        assert cli_error(capsys, *command) == f"modernenc {command[0]}: {expected}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bert", "in.jsonl"]


def test_predictions_come_with_a_provenance_record_an_auditor_can_check(model_dir, tmp_path, capsys):
    """OUT.provenance.json names the weights, input and output by their SHA-256 (hashed here independently),
    and the threshold, its source and band as thresholds.json and the written labels show them."""
    import hashlib

    def sha256(path):
        return hashlib.sha256(path.read_bytes()).hexdigest()

    src = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in TEXTS[:8]])
    out = tmp_path / "out.jsonl"
    summary = predict_file(model_dir, src, out, progress=False)
    record = json.loads((tmp_path / "out.jsonl.provenance.json").read_text())
    assert summary.provenance == tmp_path / "out.jsonl.provenance.json"
    assert record["output"]["sha256"] == sha256(out) and record["input"]["sha256"] == sha256(src)
    assert record["model"]["weights_sha256"] == sha256(model_dir / "model.safetensors")
    assert record["model"]["precision"] == "fp32" and record["model"]["path"] == str(model_dir)
    rows = read_jsonl(out)
    written = json.loads((model_dir / "thresholds.json").read_text())
    decision = record["decision"]
    assert decision["threshold"] == written["thresholds"][written["chosen"]] == THRESHOLD
    assert decision["review_band"] == list(BAND)
    assert decision["threshold_source"] == f"thresholds.json ({written['chosen']!r})"
    assert record["output"]["rows"] == len(rows) == 8
    assert record["output"]["flagged"] == sum(r["probability"] >= THRESHOLD for r in rows)
    assert record["output"]["needs_review"] == sum(r["needs_review"] for r in rows)
    assert record["versions"]["torch"] == torch.__version__

    # An own file where the record would go is never replaced, and is found before any work.
    user_file = tmp_path / "mine.jsonl.provenance.json"
    user_file.write_text("the user's\n")
    message = cli_error(
        capsys, "predict", str(model_dir), str(src), "--out", str(tmp_path / "mine.jsonl"), "--force"
    )
    assert f"refusing to replace {user_file} even with --force" in message
    assert user_file.read_text() == "the user's\n" and not (tmp_path / "mine.jsonl").exists()
