"""LR schedules: hand-computed multipliers, composer-State evaluation, registry errors, one Trainer run."""

from __future__ import annotations

import math

import pytest
import torch
from composer.core import Callback, State, Timestamp
from composer.devices import DeviceCPU

from modernenc.train import (
    ConstantWithWarmupScheduler,
    WarmupStableDecayScheduler,
    build_optimizer,
    build_scheduler,
    wsd_multiplier,
)

AF = 0.001  # ModernBERT's alpha_f

# ------------------------------------------------------------------------------ pure function


@pytest.mark.parametrize(
    "step, shape, expected",
    [
        (0, "1-sqrt", 0.0),  # warmup starts at alpha_i
        (5, "1-sqrt", 0.5),  # warmup midpoint (warmup = 10)
        (10, "1-sqrt", 1.0),  # warmup done
        (50, "1-sqrt", 1.0),  # stable
        (80, "1-sqrt", 1.0),  # decay starts at 100 - 20; progress 0
        (85, "1-sqrt", AF + (1 - AF) * (1 - 0.5)),  # 25% into decay: sqrt(0.25) = 0.5
        (85, "linear", AF + (1 - AF) * 0.75),
        (85, "cosine", AF + (1 - AF) * 0.5 * (1 + math.cos(math.pi / 4))),
        (90, "cosine", AF + (1 - AF) * 0.5),
        (90, "linear", AF + (1 - AF) * 0.5),
        (100, "1-sqrt", AF),  # end of the run
        (120, "linear", AF),  # past the end: held at alpha_f
    ],
)
def test_wsd_multiplier_hand_computed(step, shape, expected):
    got = wsd_multiplier(step, total=100, warmup=10, decay=20, shape=shape, alpha_f=AF)
    assert got == pytest.approx(expected, abs=1e-12)


def test_wsd_alpha_i_no_decay_and_full_decay():
    assert wsd_multiplier(5, 100, 10, 0, alpha_i=0.2) == pytest.approx(0.6)
    assert wsd_multiplier(100, 100, 10, 0) == 1.0  # ModernBERT phase 1: warmup-stable only
    # ModernBERT phase 3: the decay is the whole run
    assert wsd_multiplier(0, 100, 0, 100, "1-sqrt", AF) == 1.0
    assert wsd_multiplier(25, 100, 0, 100, "1-sqrt", AF) == pytest.approx(AF + (1 - AF) * 0.5)
    assert wsd_multiplier(100, 100, 0, 100, "one_minus_sqrt", AF) == pytest.approx(AF)  # yaml alias


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(warmup=-1), "warmup"),
        (dict(decay=-1), "decay"),
        (dict(warmup=60, decay=50), "exceeds the run"),
        (dict(alpha_f=1.5), "alpha_f"),
        (dict(alpha_i=-0.1), "alpha_i"),
        (dict(shape="cosin"), "did you mean 'cosine'"),
        (dict(total=0), "total"),
    ],
)
def test_wsd_multiplier_rejects_bad_input(kwargs, field):
    args = dict(step=0, total=100, warmup=10, decay=20, shape="linear", alpha_f=0.0, alpha_i=0.0) | kwargs
    with pytest.raises(ValueError, match=field):
        wsd_multiplier(**args)


# ------------------------------------------------------------------------------ composer State


@pytest.fixture(scope="module")
def state() -> State:
    return State(model=torch.nn.Linear(2, 2), rank_zero_seed=0, run_name="sched", device=DeviceCPU())


def at(state: State, max_duration: str, **timestamp: int) -> State:
    state.max_duration = max_duration
    state.timestamp = Timestamp(**timestamp)
    return state


def test_scheduler_on_state_in_batches(state):
    sched = WarmupStableDecayScheduler("10ba", "0.2dur", "1-sqrt", alpha_f=AF)
    assert sched(at(state, "100ba", batch=5)) == pytest.approx(0.5)
    assert sched(at(state, "100ba", batch=50)) == 1.0
    assert sched(at(state, "100ba", batch=85)) == pytest.approx(AF + (1 - AF) * 0.5)
    assert sched(at(state, "100ba", batch=100)) == pytest.approx(AF)


def test_scheduler_token_durations(state):
    # Warmup counted in tokens while the run is counted in batches (ModernBERT: "3e9tok" warmup).
    sched = WarmupStableDecayScheduler("1000tok", "0ba", alpha_i=0.0)
    assert sched(at(state, "100ba", batch=1, token=250)) == pytest.approx(0.25)
    assert sched(at(state, "100ba", batch=3, token=1000)) == 1.0
    # A run counted in tokens: decay over the last half, linear.
    sched = WarmupStableDecayScheduler("0tok", "5000tok", "linear", alpha_f=0.0)
    assert sched(at(state, "10000tok", batch=7, token=7500)) == pytest.approx(0.5)
    # Fractions of "dur" resolve to the run's unit; a decay in another unit cannot be anchored to the end.
    sched = WarmupStableDecayScheduler("0ba", "0.5dur", "linear")
    assert sched(at(state, "10000tok", batch=7, token=7500)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="t_decay"):
        WarmupStableDecayScheduler("0ba", "10ba")(at(state, "10000tok", token=10))
    with pytest.raises(ValueError, match="reports none"):  # a dataloader whose tokens composer can't count
        WarmupStableDecayScheduler("1000tok", "0ba")(at(state, "100ba", batch=5, token=0))


def test_scheduler_scale_schedule_ratio(state):
    # The trainer doubles max_duration for ssr=2; absolute decay doubles too, warmup does not by default.
    sched = WarmupStableDecayScheduler("10ba", "20ba", "linear")
    assert sched(at(state, "200ba", batch=5), ssr=2.0) == pytest.approx(0.5)
    assert sched(at(state, "200ba", batch=180), ssr=2.0) == pytest.approx(0.5)  # decay is 160..200


def test_scheduler_rejects_bad_durations(state):
    with pytest.raises(ValueError, match="t_warmup"):
        WarmupStableDecayScheduler("-5ba", "0ba")
    with pytest.raises(ValueError, match="t_decay"):
        WarmupStableDecayScheduler("0ba", "10sec")
    with pytest.raises(ValueError, match="longer than the run"):
        WarmupStableDecayScheduler("0.6dur", "0.5dur")
    with pytest.raises(ValueError, match="alpha_f"):
        WarmupStableDecayScheduler("0ba", "0ba", alpha_f=2.0)
    with pytest.raises(ValueError, match="decay_shape"):
        WarmupStableDecayScheduler("0ba", "0ba", decay_shape="exp")
    with pytest.raises(ValueError, match="longer than the run"):  # only knowable once max_duration is
        WarmupStableDecayScheduler("60ba", "50ba")(at(state, "100ba"))


def test_constant_with_warmup(state):
    sched = ConstantWithWarmupScheduler("6ba", alpha_i=0.1)
    assert sched(at(state, "100ba", batch=3)) == pytest.approx(0.55)
    assert sched(at(state, "100ba", batch=100)) == 1.0


# ------------------------------------------------------------------------------ registry


def test_build_scheduler_and_errors():
    sched = build_scheduler("warmup_stable_decay", t_warmup="3000ba", t_decay="0.1dur", decay_shape="cosine")
    assert isinstance(sched, WarmupStableDecayScheduler) and sched.decay_shape == "cosine"
    assert isinstance(build_scheduler("constant_with_warmup", t_warmup="1ba"), ConstantWithWarmupScheduler)
    with pytest.raises(ValueError, match="did you mean 'warmup_stable_decay'"):
        build_scheduler("warmup_stable_decy", t_warmup="1ba", t_decay="0ba")
    with pytest.raises(ValueError, match="did you mean 't_warmup'"):
        build_scheduler("constant_with_warmup", t_warmpu="1ba")
    with pytest.raises(ValueError, match="missing required"):
        build_scheduler("warmup_stable_decay", t_warmup="1ba")


# ------------------------------------------------------------------------------ composer Trainer


class _RecordLR(Callback):
    def __init__(self) -> None:
        self.lrs: list[float] = []

    def before_forward(self, state, logger) -> None:
        self.lrs.append(state.optimizers[0].param_groups[0]["lr"])


def test_trainer_follows_schedule(tmp_path):
    from composer import Trainer
    from composer.models import ComposerClassifier
    from torch.utils.data import DataLoader, TensorDataset

    data = TensorDataset(torch.randn(16, 4), torch.randint(0, 2, (16,)))
    model = ComposerClassifier(torch.nn.Linear(4, 2), num_classes=2)
    lr = 1e-2
    recorder = _RecordLR()
    trainer = Trainer(
        model=model,
        train_dataloader=DataLoader(data, batch_size=2),
        max_duration="8ba",
        optimizers=build_optimizer(model, "stableadamw", lr=lr),
        schedulers=WarmupStableDecayScheduler("2ba", "0.5dur", "linear", alpha_f=0.0),
        callbacks=[recorder],
        device="cpu",
        save_folder=None,
        progress_bar=False,
        log_to_console=False,
        loggers=[],
    )
    trainer.fit()
    # Schedule by timestamp: warmup 0, .5; stable; linear decay over 4..8 -> 1, .75, .5, .25.
    by_timestamp = [0.0, 0.5, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25]
    # Composer steps schedulers at the end of batch k *before* advancing the timestamp, so batch k >= 1
    # trains with the multiplier of timestamp k - 1 (batch 0 with that of timestamp 0).
    expected = [by_timestamp[0], *by_timestamp[:-1]]
    assert recorder.lrs == pytest.approx([lr * m for m in expected])
