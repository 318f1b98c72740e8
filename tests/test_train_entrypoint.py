"""`train.py`: config validation before anything is built, a real composer run, and exact resume."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from composer.loggers import InMemoryLogger
from conftest import SHARED_DATA
from transformers import AutoModelForMaskedLM, AutoTokenizer

from modernenc.data.corpus import read_wikiextractor
from modernenc.data.masking import load_tokenizer
from modernenc.data.mds import write_mds_corpus
from modernenc.model import ModernEncoderConfig, ModernEncoderForMaskedLM
from modernenc.train.builders import build_model, build_stream, build_trainer
from modernenc.train.callbacks import TrainingCurves
from modernenc.train.config import ConfigError, load_config
from modernenc.train.export import export_to_hf, load_composer_checkpoint

REPO = Path(__file__).resolve().parents[1]
TOKENIZER = SHARED_DATA / "tokenizers" / "modernbert"


@pytest.fixture(scope="module")
def wiki_shards(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wiki") / "mds"
    docs = list(read_wikiextractor(SHARED_DATA / "wikipedia_en" / "AA" / "wiki_00"))[:20]
    write_mds_corpus(docs, load_tokenizer(TOKENIZER), out, max_length=128, progress=False)
    return out / "train"


def write_yaml(tmp_path: Path, shards: Path, **extra: str) -> Path:
    lines = [
        "run_name: t",
        f"save_folder: {tmp_path / 'run'}",
        "model: {preset: tiny}",
        # Batch-size warmup 2 -> 4 sequences over 512 token slots: steps of 1, 1, 2, 2 micro-batches.
        f"data: {{train: {shards}, tokenizer: {TOKENIZER}, max_seq_len: 128, micro_batch_size: 2, "
        "global_batch_size: 4, batch_size_warmup: {min_batch_size: 2, warmup_tokens: 512}}",
        "scheduler: {t_warmup: 2ba, t_decay: 0ba}",
        "max_duration: 4ba",
        "save_interval: 2ba",
        "logging: {progress_bar: false}",
        *(f"{k}: {v}" for k, v in extra.items()),
    ]
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "train.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_train_py(yaml: Path, *overrides: str) -> subprocess.CompletedProcess:
    """`python train.py YAML OVERRIDES...` as a user runs it, output captured."""
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), str(yaml), *overrides],
        capture_output=True,
        text=True,
        cwd=REPO,
    )


def test_unknown_key_names_its_path_and_nearest_key(tmp_path, wiki_shards):
    yaml = write_yaml(tmp_path, wiki_shards)
    with pytest.raises(ConfigError, match=r"unknown key 'optimizer\.lrr' \(did you mean 'optimizer\.lr'\?\)"):
        load_config(yaml, ["optimizer.lrr=1e-3"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.max_seq_len=abc", r"key 'data\.max_seq_len' has a wrong type"),
        ("max_duration=-5ba", r"max_duration='-5ba' must be positive"),
        ("max_duration=soon", r"not a duration"),
        ("model.task=translation", r"model\.task='translation'"),
        ("scheduler.t_warmup=0.1dur max_duration=2ep", r"streamed MLM data has no length"),
        ("eval_interval=0ba", r"eval_interval='0ba' must be positive"),
        ("save_interval=0ba", r"save_interval='0ba' must be positive"),
        ("evaluation.target_recall=1.5", r"target_recall=1.5 must be in \(0, 1\]"),
        ("evaluation.target_recall=0", r"target_recall=0.0 must be in \(0, 1\]"),
        ("evaluation.early_stopping_patience=-1", r"early_stopping_patience=-1 must be >= 0"),
        ("optimizer.betas=[0.9]", r"optimizer\.betas=\[0\.9\] must be two numbers"),
        ("device=tpu", r"device='tpu'; choose 'cpu', 'gpu' or null"),
        ("optimizer.lr", r"override 'optimizer\.lr' is not key=value"),
        # Each of these got past the config before: a TypeError traceback once the data was loaded, torch's
        # DataLoader refusing at the first batch, or evaluations of no batch (metrics of nothing).
        (
            "model.overrides.hiden_size=64",
            r"unknown key 'model\.overrides\.hiden_size' \(did you mean 'hidden_size'\?\)",
        ),
        ("data.num_workers=-1", r"data\.num_workers=-1 must be >= 0"),
        ("eval_subset_num_batches=0", r"eval_subset_num_batches=0 must be positive, or -1"),
        ("data.max_seq_len=0", r"data\.max_seq_len=0 must be positive"),
        (  # 4 steps of 4 sequences of 128 tokens hold 2,048 tokens: the LR would never reach its peak
            "scheduler.t_warmup=5000tok",
            r"scheduler\.t_warmup=5000tok is more tokens than max_duration=4ba can hold \(4 steps x 4 "
            r"sequences x 128 tokens = 2,048 at most\)",
        ),
    ],
)
def test_bad_values_fail_with_the_key(tmp_path, wiki_shards, override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write_yaml(tmp_path, wiki_shards), override.split())


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        ("- run_name: x\n", [], r"the top level must be a mapping of keys to values .*, not a list"),
        ("just a string\n", [], r"the top level must be a mapping .*, not a string"),
        ("", [], r"required key\(s\) not set: data.tokenizer, data.train, run_name$"),
        (
            "model: {preset: tiny}\n",
            ["data.train=x", "data.tokenizer=y"],
            r"required key\(s\) not set: run_name$",
        ),
        ("run_name: a\nmodel: [1, 2]\n", [], r"key 'model' must be a mapping .*, not a list"),
        ("run_name: a\n", ["data.batch_size_warmup=5"], r"key 'data.batch_size_warmup' must be a mapping"),
        ("run_name: a\n", ["data.train=[oops"], r"override 'data.train=\[oops' cannot be parsed"),
        ("run_name: a\nrun_name: b\n", [], r"c.yaml:2 is not valid YAML: found duplicate key run_name"),
        (
            "run_name: a\nsave_folder: ${nowhere}\n",
            ["data.train=x", "data.tokenizer=y"],
            r"key 'save_folder' \(\$\{nowhere\}\) cannot be resolved: Interpolation key 'nowhere' not found",
        ),
    ],
)
def test_a_yaml_of_the_wrong_shape_names_the_problem(tmp_path, text, overrides, message):
    """omegaconf's own errors name an interpolating key, a key that is the text itself, or no key."""
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "c.yaml", overrides)


def test_missing_data_fails_before_the_model_is_built(tmp_path, wiki_shards):
    cfg = load_config(write_yaml(tmp_path, wiki_shards), [f"data.train={tmp_path / 'nowhere'}"])
    with pytest.raises(ConfigError, match=r"data\.train: no MDS shards at"):
        build_trainer(cfg)


def test_shards_longer_than_max_seq_len_are_refused(tmp_path, wiki_shards):
    """Packing would take the 128-token chunks whole: training at 64 would silently see 128."""
    cfg = load_config(write_yaml(tmp_path, wiki_shards), ["data.max_seq_len=64"])
    with pytest.raises(ConfigError, match=r"sequences of up to 128 tokens, longer than data\.max_seq_len=64"):
        build_trainer(cfg)


def swapped_tokenizer(folder: Path) -> Path:
    """ModernBERT's tokenizer with the ids of 'the' and 'of' swapped: as many ids, other tokens behind two."""
    spec = json.loads((TOKENIZER / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = spec["model"]["vocab"]
    vocab["Ġthe"], vocab["Ġof"] = vocab["Ġof"], vocab["Ġthe"]
    folder.mkdir()
    (folder / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    return folder


def test_shards_of_another_tokenizer_are_refused_before_training(tmp_path, wiki_shards):
    """Their ids would stand for other tokens: silently, when the vocabulary is as large (an IndexError in
    the masking, when smaller)."""
    other = swapped_tokenizer(tmp_path / "swapped")
    cfg = load_config(write_yaml(tmp_path, wiki_shards), [f"data.tokenizer={other}"])
    with pytest.raises(
        ConfigError,
        match=rf"data\.train: {wiki_shards} was prepared with another tokenizer than data\.tokenizer={other} "
        r"\(one with the same 50,368 ids but other tokens behind them\)",
    ):
        build_trainer(cfg)
    assert not (tmp_path / "run").exists()


def test_too_long_samples_without_a_report_stop_training_in_one_line(tmp_path, wiki_shards):
    """Shards from elsewhere (no report.json) are checked as they are read."""
    bare = tmp_path / "bare" / "train"
    shutil.copytree(wiki_shards, bare)
    yaml = write_yaml(tmp_path, bare)
    overrides = ["data.max_seq_len=64"]  # 2 x 64 slots: a 128-token chunk would fit the micro-batch
    proc = run_train_py(yaml, *overrides)
    assert proc.returncode != 0
    assert "more than data.max_seq_len=64; prepare the shards with --max-length 64" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "name, index, message",
    [
        ("empty", '{"version": 2, "shards": []}', r"data\.eval: .* holds no samples"),
        ("corrupt", "{oops", r"data\.eval: corrupt MDS index .*corrupt/index\.json"),
    ],
)
def test_an_empty_or_corrupt_validation_split_is_named_with_its_key(
    tmp_path, wiki_shards, name, index, message
):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "index.json").write_text(index)
    cfg = load_config(write_yaml(tmp_path, wiki_shards), [f"data.eval={folder}"])
    with pytest.raises(ConfigError, match=message):
        build_trainer(cfg)


def losses_of(trainer, key: str = "loss/train/total") -> dict[int, float]:
    logger = next(d for d in trainer.logger.destinations if isinstance(d, InMemoryLogger))
    return {int(ts.batch): float(v) for ts, v in logger.data[key]}


STEP_LOGS = {}  # other metrics of the straight run, by key


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, wiki_shards) -> tuple[Path, dict[int, float]]:
    """Four batches without interruption: the reference loss curve and its checkpoints."""
    folder = tmp_path_factory.mktemp("straight")
    cfg = load_config(write_yaml(folder, wiki_shards))
    trainer = build_trainer(cfg, loggers=[InMemoryLogger()])
    trainer.fit()
    losses = losses_of(trainer)
    STEP_LOGS["config"] = cfg
    curves = next(c for c in trainer.state.callbacks if isinstance(c, TrainingCurves))
    STEP_LOGS["curves_loss"] = dict(curves.history["loss"])
    for key in (
        "trainer/global_batch_size",
        "trainer/grad_accum_steps",
        "time/token",
        "lr-StableAdamW/group0",
    ):
        STEP_LOGS[key] = losses_of(trainer, key)
    trainer.close()
    return folder / "run", losses


def test_curves_plot_each_steps_loss_over_all_its_micro_batches(straight_run):
    _, losses = straight_run
    assert STEP_LOGS["trainer/grad_accum_steps"][4] == 2  # the last steps accumulate two micro-batches
    # Logged during step b (0-based), plotted at its end (1-based): same steps, same order.
    assert list(STEP_LOGS["curves_loss"].values()) == pytest.approx(list(losses.values()), rel=1e-6)


def test_batch_size_warmup_steps_up_with_grad_accum(straight_run):
    # Logged at the end of batch b (1-based count): the global batch b trained with.
    assert STEP_LOGS["trainer/global_batch_size"] == {1: 2, 2: 2, 3: 4, 4: 4}
    assert STEP_LOGS["trainer/grad_accum_steps"] == {1: 1, 2: 1, 3: 2, 4: 2}
    # Composer's token clock counts the real tokens of all micro-batches of a step (these pack fully).
    assert STEP_LOGS["time/token"] == {0: 0, 1: 256, 2: 512, 3: 1024, 4: 1536}


def test_plot_schedule_matches_the_trained_learning_rates(straight_run):
    from modernenc.train.schedule_plot import simulate_schedule

    schedule = simulate_schedule(STEP_LOGS["config"])
    assert schedule.global_batch_size == [2, 2, 4, 4]
    # LRMonitor logs at the end of batch b (1-based) the LR that step b (0-based) will train with.
    logged = STEP_LOGS["lr-StableAdamW/group0"]
    assert [logged[b] for b in (1, 2, 3)] == pytest.approx(schedule.lr[1:])
    # A 2ba warmup to lr 8e-4; step i trains with the multiplier of step i - 1.
    assert schedule.lr == pytest.approx([0.0, 0.0, 4e-4, 8e-4])


def test_resumed_run_reproduces_the_uninterrupted_loss_curve(tmp_path, wiki_shards, straight_run):
    _, expected = straight_run
    assert len(expected) == 4 and all(v == v for v in expected.values())
    yaml = write_yaml(tmp_path, wiki_shards)
    first = build_trainer(load_config(yaml, ["max_duration=2ba"]), loggers=[InMemoryLogger()])
    first.fit()
    first.close()
    resumed = build_trainer(load_config(yaml, ["autoresume=true"]), loggers=[InMemoryLogger()])
    resumed.fit()
    got = {**losses_of(first), **losses_of(resumed)}
    # The warmup's token count comes back from the checkpoint: the resumed steps accumulate 2 micro-batches.
    assert losses_of(resumed, "trainer/grad_accum_steps") == {3: 2, 4: 2}
    resumed.close()
    assert sorted(got) == sorted(expected)
    for step, loss in expected.items():
        assert got[step] == pytest.approx(loss, abs=1e-6), f"batch {step}"


def final_weights(run_folder: Path) -> dict[str, torch.Tensor]:
    return load_composer_checkpoint(run_folder / "latest-rank0.pt").state_dict()


def test_a_torn_newest_checkpoint_is_set_aside_and_the_run_resumes_to_the_same_weights(
    tmp_path, wiki_shards, straight_run, capsys
):
    """What composer's in-place write left after a kill during the ba4 save: a complete ba2, a cut-short
    ba4 under its final name, and `latest` pointing at it. Also: keep-N counts the earlier process's ba2."""
    straight_folder, _ = straight_run
    yaml = write_yaml(tmp_path, wiki_shards, save_num_checkpoints_to_keep="1")
    first = build_trainer(load_config(yaml, ["max_duration=2ba"]))
    first.fit()
    first.close()
    run = tmp_path / "run"
    whole = (straight_folder / "ep0-ba4-rank0.pt").read_bytes()
    (run / "ep0-ba4-rank0.pt").write_bytes(whole[: len(whole) // 2])
    (run / "latest-rank0.pt").unlink()
    (run / "latest-rank0.pt").symlink_to("ep0-ba4-rank0.pt")
    capsys.readouterr()

    resumed = build_trainer(load_config(yaml, ["autoresume=true"]))
    printed = capsys.readouterr().out
    assert f"set aside {run / 'ep0-ba4-rank0.pt'} as ep0-ba4-rank0.pt.damaged: " in printed
    assert "cut short" in printed
    assert f"resumed from {run / 'ep0-ba2-rank0.pt'} at step 2" in printed
    resumed.fit()
    resumed.close()
    torch.testing.assert_close(final_weights(run), final_weights(straight_folder), atol=0, rtol=0)
    # keep=1: the ba2 the first process left is rotated out too; the damaged file stays for inspection.
    assert sorted(p.name for p in run.iterdir() if p.suffix != ".png" and not p.name.startswith(".")) == [
        "ep0-ba4-rank0.pt",
        "ep0-ba4-rank0.pt.damaged",
        "latest-rank0.pt",
    ]


def test_resume_point_takes_a_copied_in_latest_file_and_never_replaces_it(tmp_path, straight_run):
    """A checkpoint copied in as latest-rank0.pt (no ep*-ba* files) is resumed from, as composer does; a
    latest that is a file of its own is never turned into a link."""
    from modernenc.train.checkpointing import find_resume_checkpoint

    straight_folder, _ = straight_run
    copied = tmp_path / "latest-rank0.pt"
    shutil.copy(straight_folder / "ep0-ba2-rank0.pt", copied)
    point = find_resume_checkpoint(tmp_path)
    assert point.path == copied and point.set_aside == []
    shutil.copy(straight_folder / "ep0-ba4-rank0.pt", tmp_path / "ep0-ba4-rank0.pt")
    assert find_resume_checkpoint(tmp_path).path == tmp_path / "ep0-ba4-rank0.pt"
    assert (
        not copied.is_symlink() and copied.read_bytes() == (straight_folder / "ep0-ba2-rank0.pt").read_bytes()
    )
    assert find_resume_checkpoint(tmp_path / "nowhere").path is None


KILL_DURING_SECOND_SAVE = """
import io, os, signal, sys
import torch
real_save, saves = torch.save, []

def save_half_then_die(obj, f, *args, **kwargs):  # composer's checkpoint write goes through torch.save
    saves.append(1)
    if len(saves) < 2:
        return real_save(obj, f, *args, **kwargs)
    buffer = io.BytesIO()
    real_save(obj, buffer, *args, **kwargs)
    f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)

torch.save = save_half_then_die
from modernenc.cli import main
main(["train", *sys.argv[1:]])
"""


def test_a_kill_during_a_checkpoint_save_leaves_no_torn_file_and_resumes_exactly(
    tmp_path, wiki_shards, straight_run
):
    """A real SIGKILL half-way through writing ep0-ba4: no file under a final name is torn, and autoresume
    continues from ba2 to the uninterrupted run's weights."""
    straight_folder, _ = straight_run
    yaml = write_yaml(tmp_path, wiki_shards)
    proc = subprocess.run(
        [sys.executable, "-c", KILL_DURING_SECOND_SAVE, str(yaml)], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    run = tmp_path / "run"
    names = sorted(p.name for p in run.iterdir())
    assert "ep0-ba4-rank0.pt" not in names and "ep0-ba2-rank0.pt" in names
    assert any(n.startswith(".ep0-ba4-rank0.pt.") for n in names)  # the torn write, under its temporary name
    assert os.readlink(run / "latest-rank0.pt") == "ep0-ba2-rank0.pt"

    resumed = build_trainer(load_config(yaml, ["autoresume=true"]))
    resumed.fit()
    resumed.close()
    torch.testing.assert_close(final_weights(run), final_weights(straight_folder), atol=0, rtol=0)
    assert not [p.name for p in run.iterdir() if ".partial" in p.name]  # the torn write was cleared


def test_resume_with_another_architecture_is_refused(tmp_path, wiki_shards, straight_run):
    run_folder, _ = straight_run
    cfg = load_config(
        write_yaml(tmp_path, wiki_shards),
        [f"save_folder={run_folder}", "autoresume=true", "model.preset=mini", "max_duration=6ba"],
    )
    with pytest.raises(
        ValueError,
        match=rf"autoresume=true cannot continue from {run_folder}/ep0-ba\d+-rank0\.pt: checkpoint's model "
        r"differs from this run's in: .*hidden_size.*; resume it with the settings it was trained with, or "
        r"start a new run \(another run_name, or force=true",
    ):
        build_trainer(cfg).fit()


def test_exported_checkpoint_loads_in_transformers(tmp_path, straight_run):
    run_folder, _ = straight_run
    out = export_to_hf(run_folder / "latest-rank0.pt", tmp_path / "hf", tokenizer_path=TOKENIZER)
    ours = load_composer_checkpoint(run_folder / "latest-rank0.pt").eval()
    hf, info = AutoModelForMaskedLM.from_pretrained(out, output_loading_info=True, attn_implementation="sdpa")
    assert not info["missing_keys"] and not info["unexpected_keys"]
    batch = AutoTokenizer.from_pretrained(out)(
        ["Aspirin may cause [MASK] bleeding.", "Hi."], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        expected = hf.eval()(**batch).logits
        got = ours(batch["input_ids"], batch["attention_mask"]).logits
    real = batch["attention_mask"].bool()
    assert float((expected - got)[real].abs().max()) < 1e-4


def test_existing_run_is_not_overwritten_without_consent(tmp_path, wiki_shards):
    yaml = write_yaml(tmp_path, wiki_shards)
    run = tmp_path / "run"
    run.mkdir()
    (run / "ep0-ba2-rank0.pt").write_bytes(b"earlier run")
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        build_trainer(load_config(yaml))
    assert (run / "ep0-ba2-rank0.pt").read_bytes() == b"earlier run"


def test_force_removes_the_earlier_runs_outputs_and_nothing_else(tmp_path, wiki_shards, capsys):
    """Left beside the new run, old checkpoints would be averaged with its own, and an old best-hf or
    report would pass for the new run's. Only what the earlier run recorded goes."""
    from modernenc.utils.outputs import claim_folder, record, writing_folder

    run = tmp_path / "run"
    claim_folder(run, "train-run", "train")
    for name in ("ep0-ba2-rank0.pt", "ep0-ba4-rank0.pt", "curves.png"):
        (run / name).write_bytes(b"earlier run")
        record(run / name)  # what the run's writers do
    (run / "latest-rank0.pt").symlink_to("ep0-ba4-rank0.pt")
    record(run / "latest-rank0.pt")
    with writing_folder(run / "best-hf", kind="hf-model", tool="train") as staging:
        (staging / "model.safetensors").write_bytes(b"earlier run")
    record(run / "best-hf")
    (run / "best-hf" / "my-notes.md").write_text("the user's own file, inside the earlier best model")
    (run / "notes.txt").write_text("the user's own file")
    trainer = build_trainer(
        load_config(write_yaml(tmp_path, wiki_shards), ["force=true", "max_duration=2ba"])
    )
    assert (run / "ep0-ba4-rank0.pt").read_bytes() == b"earlier run"  # not before the new run has trained
    trainer.fit()
    left = sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if not p.name.startswith("."))
    new_run = ["curves.png", "ep0-ba2-rank0.pt", "latest-rank0.pt"]
    assert left == ["best-hf", "best-hf/my-notes.md", *new_run, "notes.txt"]
    assert load_composer_checkpoint(run / "ep0-ba2-rank0.pt")  # the new run's, not the earlier bytes
    assert (run / "latest-rank0.pt").resolve().name == "ep0-ba2-rank0.pt"
    assert "kept best-hf, notes.txt in" in capsys.readouterr().out


def _earlier_run(run: Path) -> dict[str, bytes]:
    """An earlier run's recorded checkpoints in `run`, as train.py leaves them; returns its files."""
    from modernenc.utils.outputs import claim_folder, record

    claim_folder(run, "train-run", "train")
    for name in ("ep0-ba2-rank0.pt", "ep0-ba4-rank0.pt"):
        (run / name).write_bytes(b"earlier run " + name.encode())
        record(run / name)
    return {p.name: p.read_bytes() for p in run.iterdir() if p.name != ".modernenc-outputs.json"}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "scheduler.t_warmup=10ba",
            r"t_warmup \(10ba = 10ba\) \+ t_decay \(0ba = 0ba\) is longer than the run",
        ),
        ("scheduler.name=cosine", r"unknown scheduler 'cosine'"),
        ("optimizer.name=adam", r"unknown optimizer 'adam'"),
        ("device=gpu", r"(?i)cuda"),  # composer's Trainer finds no GPU on the test machine
    ],
)
def test_force_keeps_the_earlier_run_when_the_new_one_cannot_start(tmp_path, wiki_shards, override, message):
    """force=true consents to replacing the earlier run by a new one, not to losing it to a setting that
    only the optimizer, the scheduler or composer's Trainer checks."""
    if override == "device=gpu" and torch.cuda.is_available():
        pytest.skip("needs a machine without a GPU")
    from modernenc.train.run import run_training

    run = tmp_path / "run"
    earlier = _earlier_run(run)
    with pytest.raises((ValueError, RuntimeError), match=message):
        run_training(write_yaml(tmp_path, wiki_shards), ["force=true", override])
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.name in earlier} == earlier


def test_force_keeps_the_earlier_run_when_the_data_cannot_be_read(tmp_path, wiki_shards):
    """A shard cut short is found only when it is read, at the first batch: the earlier run stays."""
    from modernenc.train.run import TrainingError, run_training

    shards = tmp_path / "cut" / "train"
    shutil.copytree(wiki_shards, shards, ignore=shutil.ignore_patterns("*.mds"))  # no decompressed copies
    (zipped,) = shards.glob("*.mds.zstd")
    zipped.write_bytes(zipped.read_bytes()[: zipped.stat().st_size // 2])
    run = tmp_path / "run"
    earlier = _earlier_run(run)
    with pytest.raises(TrainingError, match=r"cannot read shard .*shard\.00000\.mds\.zstd"):
        run_training(write_yaml(tmp_path, shards), ["force=true"])
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.name in earlier} == earlier


def test_force_refuses_checkpoints_no_run_recorded(tmp_path, wiki_shards):
    """A save folder of someone else's (or an older modernenc's): nothing in it is provably the run's."""
    run = tmp_path / "run"
    run.mkdir()
    for name in ("ep0-ba2-rank0.pt", "notes.txt"):
        (run / name).write_bytes(b"not written by a modernenc run")
    with pytest.raises(
        ConfigError, match=r"holds ep0-ba2-rank0.pt, which modernenc has no record of writing"
    ):
        build_trainer(load_config(write_yaml(tmp_path, wiki_shards), ["force=true"]))
    assert sorted(p.name for p in run.iterdir()) == ["ep0-ba2-rank0.pt", "notes.txt"]


def test_a_restart_from_the_runs_own_checkpoint_is_refused_before_anything_is_removed(
    tmp_path, wiki_shards, capsys
):
    """force=true would delete the checkpoint the new run was to start from (the large-LR restart)."""
    run = tmp_path / "run"
    run.mkdir()
    for name in ("ep0-ba2-rank0.pt", "ep0-ba4-rank0.pt"):
        (run / name).write_bytes(b"earlier run")
    yaml = write_yaml(tmp_path, wiki_shards)
    for extra in (["force=true"], []):
        with pytest.raises(
            ConfigError, match=r"model.init_from=.*ep0-ba2-rank0.pt lies in this run's folder"
        ):
            build_trainer(load_config(yaml, [f"model.init_from={run / 'ep0-ba2-rank0.pt'}", *extra]))
    assert sorted(p.name for p in run.iterdir()) == ["ep0-ba2-rank0.pt", "ep0-ba4-rank0.pt"]
    # Resuming the run that was started from it is fine; the console says what autoresume takes.
    from modernenc.train.builders import check_save_folder

    check_save_folder(load_config(yaml, [f"model.init_from={run / 'ep0-ba2-rank0.pt'}", "autoresume=true"]))
    assert "model.init_from applies to a fresh run only" in capsys.readouterr().out


def test_train_py_reports_config_errors_in_one_line(tmp_path, wiki_shards):
    yaml = write_yaml(tmp_path, wiki_shards)
    proc = run_train_py(yaml, "optimzer.lr=1")
    assert proc.returncode != 0
    assert "train.py: error:" in proc.stderr and "did you mean 'optimizer'?" in proc.stderr


def test_wandb_without_a_key_runs_offline(tmp_path, wiki_shards, monkeypatch):
    from composer.loggers import WandBLogger

    from modernenc.train.builders import build_loggers

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = load_config(write_yaml(tmp_path, wiki_shards), ["logging.wandb=true"])
    (logger,) = build_loggers(cfg)
    assert isinstance(logger, WandBLogger)
    assert os.environ["WANDB_MODE"] == "offline"  # never waits on the network without a key


def test_fsdp_options_are_checked_before_training(tmp_path, wiki_shards, monkeypatch):
    yaml = write_yaml(tmp_path, wiki_shards)
    with pytest.raises(ConfigError, match=r"fsdp needs GPUs .* set fsdp=null"):
        load_config(yaml, ["device=cpu", "fsdp={sharding_strategy: FULL_SHARD}"])
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)  # a GPU box, as far as the check can see
    with pytest.raises(
        ConfigError, match=r"unknown key 'fsdp.sharding_stratgy' \(did you mean 'fsdp.sharding_strategy'"
    ):
        load_config(yaml, ["device=gpu", "fsdp={sharding_stratgy: FULL_SHARD}"])
    cfg = load_config(yaml, ["device=gpu", "fsdp={sharding_strategy: SHARD_GRAD_OP}"])
    assert cfg.fsdp == {"sharding_strategy": "SHARD_GRAD_OP"}


def test_a_checkpoint_must_have_the_sizes_of_a_preset_given_beside_it(tmp_path, wiki_shards):
    tiny = ModernEncoderForMaskedLM(ModernEncoderConfig.from_preset("tiny"))
    folder = tiny.save_pretrained(tmp_path / "tiny")
    yaml = REPO / "yamls" / "quickstart" / "pretrain.yaml"  # preset: mini
    tokenizer = f"data.tokenizer={TOKENIZER}"  # the yaml's path is relative to a checkout beside shared/
    with pytest.raises(
        ConfigError,
        match=r"has hidden_size=128, .*num_hidden_layers=3.* not the sizes of "
        r"model.preset=mini; set model.preset=tiny \(its sizes\) or model.preset=null",
    ):
        build_model(load_config(yaml, [f"model.init_from={folder}", tokenizer]))
    # With force=true, the earlier run in the save folder is removed only once the new run has built.
    from modernenc.train.builders import build_task
    from modernenc.utils.outputs import claim_folder, record

    earlier = tmp_path / "run" / "ep0-ba2-rank0.pt"
    claim_folder(earlier.parent, "train-run", "train")
    earlier.write_bytes(b"earlier run")
    record(earlier)

    with pytest.raises(ConfigError, match="not the sizes of model.preset=mini"):
        build_task(
            load_config(
                yaml,
                [f"model.init_from={folder}", f"save_folder={earlier.parent}", "force=true"]
                + [f"data.train={wiki_shards}", "data.eval=null", tokenizer],
            )
        )
    assert earlier.read_bytes() == b"earlier run"
    for preset in ("tiny", "null"):
        overrides = [f"model.init_from={folder}", f"model.preset={preset}", tokenizer]
        model = build_model(load_config(yaml, overrides)).model
        assert model.config.num_hidden_layers == 3
        torch.testing.assert_close(model.state_dict(), tiny.state_dict(), atol=0, rtol=0)
    random_init = build_model(
        load_config(yaml, [f"save_folder={tmp_path / 'r'}", "model.preset=null", tokenizer])
    )
    assert random_init.model.config.hidden_size == 256  # mini, the default
    with pytest.raises(ConfigError, match=r"model.preset='bsae' \(did you mean 'base'\?\); choose one of"):
        load_config(yaml, ["model.preset=bsae"])


def test_data_seed_changes_the_training_batches_but_not_the_held_out_masks(tmp_path, wiki_shards):
    """Phase 3 must not replay phase 2's batches, and its eval loss must stay comparable with phase 2's."""
    yaml = write_yaml(tmp_path, wiki_shards)
    first = {}
    for seed in (17, 18):
        cfg = load_config(yaml, [f"data.eval={wiki_shards}", f"data.seed={seed}"])
        first[seed] = {split: next(iter(build_stream(cfg, split))) for split in ("train", "eval")}
    assert not torch.equal(first[17]["train"]["input_ids"], first[18]["train"]["input_ids"])
    for key in ("input_ids", "labels"):
        torch.testing.assert_close(first[17]["eval"][key], first[18]["eval"][key], atol=0, rtol=0)
    quickstart = REPO / "yamls" / "quickstart"
    phase2, phase3 = (load_config(quickstart / f"{name}.yaml") for name in ("context_extension", "decay"))
    assert phase2.data.train == phase3.data.train and phase2.data.seed != phase3.data.seed


def test_a_random_init_takes_the_tokenizers_ids_and_a_checkpoint_must_share_them(tmp_path):
    """Fine-tuning frames texts with data.tokenizer's ids: the saved config must say the same ids, or
    predict and transformers would frame them differently from training."""
    from tokenizers import Tokenizer, models

    words = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]", *(f"w{i}" for i in range(123))]
    (tmp_path / "tok").mkdir()
    Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, "[UNK]")).save(
        str(tmp_path / "tok" / "tokenizer.json")
    )
    yaml = REPO / "yamls" / "quickstart" / "pretrain.yaml"
    own = [f"data.tokenizer={tmp_path / 'tok'}", "model.preset=tiny"]
    config = build_model(load_config(yaml, own)).model.config
    ids = ("vocab_size", "pad_token_id", "cls_token_id", "sep_token_id", "mask_token_id")
    assert [getattr(config, k) for k in ids] == [128, 3, 1, 2, 4]
    modernbert_ids = ModernEncoderForMaskedLM(ModernEncoderConfig.from_preset("tiny"))
    folder = modernbert_ids.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(
        ConfigError,
        match=r"does not match model.init_from=.*ckpt: pad_token_id=50283 "
        r"\(tokenizer: 3\), cls_token_id=50281 \(tokenizer: 1\).*; train with the tokenizer",
    ) as refused:
        build_model(load_config(yaml, [*own, f"model.init_from={folder}"]))
    # The fix the message gives for a checkpoint that was trained on this tokenizer works as written.
    fix = str(refused.value).split("pass '")[1].rstrip("')")
    config = build_model(load_config(yaml, [*own, f"model.init_from={folder}", fix])).model.config
    assert [getattr(config, k) for k in ids[1:]] == [3, 1, 2, 4]
