"""Gradient accumulation, batch-size config checks, `plot-schedule`, and the recipe yamls."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from composer.core import Callback
from conftest import cli_error
from test_train_entrypoint import REPO, write_yaml
from test_train_entrypoint import wiki_shards as wiki_shards  # noqa: F401 (module fixture)

from modernenc.cli import main as cli_main
from modernenc.train.builders import build_trainer
from modernenc.train.config import ConfigError, load_config
from modernenc.train.schedule_plot import draw_schedule, simulate_schedule


class GradProbe(Callback):
    """Keeps the model and micro-batches of the first step, and the gradient after its last backward."""

    def __init__(self) -> None:
        self.grads = None

    def before_train_batch(self, state, logger) -> None:
        if self.grads is None:
            self.model = copy.deepcopy(state.model)
            self.micro = copy.deepcopy(state.batch)
            self.backwards = 0

    def after_backward(self, state, logger) -> None:  # before any clipping or optimizer step
        self.backwards += 1
        if self.grads is None and self.backwards == len(self.micro):
            self.grads = {n: p.grad.clone() for n, p in state.model.named_parameters() if p.grad is not None}


def test_accumulated_gradient_is_the_mean_over_all_labelled_tokens(tmp_path, wiki_shards):  # noqa: F811
    cfg = load_config(
        write_yaml(tmp_path, wiki_shards),
        ["data.global_batch_size=6", "data.batch_size_warmup.min_batch_size=null", "max_duration=1ba"]
        + ["scheduler.t_warmup=0ba"]
        + ["grad_clip_norm=0", "save_interval=10ba", "logging.plots=false"],
    )
    trainer = build_trainer(cfg)
    probe = GradProbe()
    trainer.state.callbacks.append(probe)
    trainer.fit()
    trainer.close()
    assert len(probe.micro) == 3  # 6 sequences = 3 micro-batches of 2

    counts = [int((b["labels"] != -100).sum()) for b in probe.micro]
    assert len(set(counts)) > 1  # else token weighting and a plain mean of the losses would agree
    reference = probe.model
    loss = sum(reference(b).loss * n for b, n in zip(probe.micro, counts, strict=True)) / sum(counts)
    loss.backward()
    for name, param in reference.named_parameters():
        if param.grad is not None:
            torch.testing.assert_close(probe.grads[name], param.grad, rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.global_batch_size=5"], r"global_batch_size=5 must be a positive multiple of .* = 2"),
        (
            ["data.global_batch_size=8", "data.batch_size_warmup.min_batch_size=3"],
            r"min_batch_size=3 must be a positive multiple of micro_batch_size \* world_size",
        ),
        (["data.global_batch_size=4", "data.batch_size_warmup.min_batch_size=8"], r"exceeds .*=4"),
        (
            ["data.global_batch_size=8", "data.batch_size_warmup.warmup_tokens=0"],
            r"warmup_tokens=0 must be positive",
        ),
        (["grad_clip_norm=-1"], r"grad_clip_norm=-1.0 must be >= 0"),
    ],
)
def test_batch_size_config_errors_name_the_key(tmp_path, wiki_shards, overrides, message):  # noqa: F811
    with pytest.raises(ConfigError, match=message):
        load_config(write_yaml(tmp_path, wiki_shards), overrides)


def test_world_size_enters_the_batch_size_check(tmp_path, wiki_shards, monkeypatch):  # noqa: F811
    monkeypatch.setenv("WORLD_SIZE", "4")  # micro-batch 2 on 4 ranks: global batches step by 8
    with pytest.raises(ConfigError, match=r"micro_batch_size \* world_size = 2 \* 4 = 8"):
        load_config(write_yaml(tmp_path, wiki_shards))  # global 4, warmup from 2


WSD_YAML = """\
run_name: wsd
data: {train: none, tokenizer: none, max_seq_len: 16, micro_batch_size: 2, global_batch_size: 6,
       batch_size_warmup: {min_batch_size: 2, warmup_tokens: 320}}
optimizer: {lr: 1.0e-3}
scheduler: {name: warmup_stable_decay, t_warmup: 4ba, t_decay: 0.5dur, decay_shape: linear, alpha_f: 0.0}
max_duration: 20ba
"""


def test_plot_schedule_writes_the_png_with_hand_computed_values(tmp_path, capsys):
    yaml = tmp_path / "wsd.yaml"
    yaml.write_text(WSD_YAML)
    cli_main(["plot-schedule", str(yaml), "--out", str(tmp_path / "s.png")])
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    assert "20 steps" in capsys.readouterr().out

    s = simulate_schedule(load_config(yaml))
    # Batch sizes 2, 4, 6 (increment = micro 2 x 1 rank; 2 stages of 320 / 2 = 160 slots each), 16 slots
    # per sequence: 5 steps of 32 slots reach 160, 3 of 64 reach 352 >= 320, then 6 for good.
    assert s.global_batch_size == [2] * 5 + [4] * 3 + [6] * 12
    assert s.slots_before[:10] == [0, 32, 64, 96, 128, 160, 224, 288, 352, 448]
    # Step i trains with the multiplier at step i - 1 (step 0 with that at 0): warmup t / 4 for t < 4, then
    # 1 until the decay starts at 20 - 0.5 * 20 = 10, then linear 1 - (t - 10) / 10.
    for step, lr in {0: 0.0, 1: 0.0, 3: 5e-4, 5: 1e-3, 11: 1e-3, 12: 9e-4, 16: 5e-4, 19: 2e-4}.items():
        assert s.lr[step] == pytest.approx(lr), step


def test_plot_schedule_step_axis_lines_up_with_the_token_axis(tmp_path):
    import matplotlib.pyplot as plt

    yaml = tmp_path / "wsd.yaml"
    yaml.write_text(WSD_YAML)
    fig = draw_schedule(simulate_schedule(load_config(yaml)))
    ax_lr = fig.axes[0]
    (step_axis,) = ax_lr.child_axes  # the "optimizer step" axis on top
    fig.canvas.draw()
    # Hand-computed step starts in tokens (16 per sequence, packing efficiency 1): 5 steps of 2 sequences,
    # 3 of 4, then 6; step 20 is the end of training. The margins left of 0 and right of 1504 are outside
    # the run, where the step axis used to be clamped, which moved every one of its ticks.
    for step, tokens in {0: 0, 5: 160, 8: 352, 10: 544, 15: 1024, 20: 1504}.items():
        at_step = step_axis.transData.transform((step, 0))[0]
        at_tokens = ax_lr.transData.transform((tokens, 0))[0]
        assert at_step == pytest.approx(at_tokens, abs=0.5), step
    plt.close(fig)


def test_plot_schedule_refuses_to_overwrite_without_force_and_a_world_below_one(tmp_path, capsys):
    yaml, out = tmp_path / "wsd.yaml", tmp_path / "s.png"
    yaml.write_text(WSD_YAML)
    out.write_bytes(b"keep me")
    message = cli_error(capsys, "plot-schedule", str(yaml), "--out", str(out))
    assert (
        message
        == f"modernenc plot-schedule: error: the --out {out} already exists; pass --force to replace it"
    )
    message = cli_error(capsys, "plot-schedule", str(yaml), "--out", str(out), "--force")
    assert f"refusing to replace {out} even with --force: modernenc has no record of writing it" in message
    assert out.read_bytes() == b"keep me"  # not a plot modernenc wrote
    out.unlink()
    cli_main(["plot-schedule", str(yaml), "--out", str(out)])
    assert "already exists" in cli_error(capsys, "plot-schedule", str(yaml), "--out", str(out))
    cli_main(["plot-schedule", str(yaml), "--out", str(out), "--force"])  # its own plot: replaced
    assert out.read_bytes()[:4] == b"\x89PNG" and "wrote" in capsys.readouterr().out
    for world in ("0", "-2"):  # 0 used to fall back to $WORLD_SIZE silently
        message = cli_error(
            capsys, "plot-schedule", str(yaml), "--out", str(tmp_path / "w.png"), "--world-size", world
        )
        assert message == (
            "modernenc plot-schedule: error: world_size (the number of ranks) must be at least 1, "
            f"got {world}"
        )
    assert not (tmp_path / "w.png").exists()
    message = cli_error(capsys, "plot-schedule", str(yaml), "--out", str(tmp_path / "s.txt"))
    assert "s.txt: give an image file name ending in one of .avif, .eps" in message


def test_plot_schedule_explains_epoch_durations(tmp_path):
    yaml = tmp_path / "wsd.yaml"
    yaml.write_text(WSD_YAML)
    with pytest.raises(ValueError, match="no length before packing"):
        simulate_schedule(load_config(yaml, ["max_duration=1ep", "scheduler.t_decay=2ba"]))


RECIPES = sorted(Path(REPO, "yamls").rglob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[str(p.relative_to(REPO)) for p in RECIPES])
def test_every_recipe_yaml_loads(path):
    # The schema and value checks only: data and checkpoints need not exist. A template's required keys
    # (`???`, to be given on the command line) get placeholders.
    try:
        load_config(path)
    except ConfigError as err:
        if "required key(s) not set: " not in str(err):
            raise
        missing = str(err).split("required key(s) not set: ")[1].split(", ")
        load_config(path, [f"{key}=placeholder" for key in missing])


def test_a_required_nested_key_is_named(tmp_path):
    yaml = tmp_path / "t.yaml"
    yaml.write_text("run_name: t\ndata: {tokenizer: tok}\n")
    with pytest.raises(ConfigError, match=r"required key\(s\) not set: data\.train$"):
        load_config(yaml)
