"""Composer callbacks: exact resume of the packed stream, packing/throughput logging, best-model keeping
with early stopping, and training-curve plots."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist

from modernenc.train.export import write_hf_folder
from modernenc.utils.outputs import record, writing_file


class PackedStreamState(Callback):
    """Saves the packer's position in every checkpoint and restores it on resume.

    Composer checkpoints callback state, so a resumed run continues from exactly the next micro-batch
    without replaying the data it already consumed (the trainer's own dataloader spin is turned off).
    """

    def __init__(self, stream) -> None:
        self.stream = stream

    def state_dict(self) -> dict[str, Any]:
        return {"stream": self.stream.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state["stream"])


class PackingMetrics(Callback):
    """Logs packing efficiency, real tokens/s, sequences per micro-batch and (given the MLM `model` and
    `peak_flops`) MFU for each training step; a step is one packed micro-batch or a list of them.

    A step's time runs from the data fetch to the end of the update: masking and packing run in the
    training process, before composer's batch start, and would otherwise not show in tokens/s or MFU.
    """

    def __init__(self, model=None, peak_flops: float | None = None) -> None:
        self._start = 0.0
        self.model = model  # a ModernEncoderForMaskedLM
        self.peak_flops = peak_flops
        self._encoder_params = model.model.num_parameters(exclude_embeddings=True) if model is not None else 0

    def before_dataloader(self, state: State, logger: Logger) -> None:
        self._start = time.perf_counter()

    def batch_end(self, state: State, logger: Logger) -> None:
        micro = state.batch if isinstance(state.batch, list) else [state.batch]
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        real = sum(int(b["num_real_tokens"]) for b in micro)
        metrics = {
            "data/packing_efficiency": sum(float(b["packing_efficiency"]) for b in micro) / len(micro),
            "data/sequences_per_batch": sum(int(b["num_sequences"]) for b in micro) / len(micro),
            "throughput/real_tokens_per_sec": real / elapsed,
        }
        if self.model is not None and self.peak_flops:
            from modernenc.train.flops import training_flops

            flops = training_flops(self.model.config, self._encoder_params, micro)
            metrics["throughput/mfu"] = flops / elapsed / self.peak_flops
        logger.log_metrics(metrics)


class BestCheckpoint(Callback):
    """Keeps the model with the best validation metric as a Hugging Face folder, and stops early.

    After each evaluation on `eval`, a better `monitor` value re-writes `out_dir` (with the tokenizer, so
    the folder is ready for `modernenc predict` and `transformers.pipeline`). Training stops after
    `patience` evaluations without improvement (0: never).
    """

    def __init__(self, out_dir: str | Path, monitor: str = "F1", patience: int = 3, tokenizer=None) -> None:
        self.out_dir = Path(out_dir)
        self.monitor = monitor
        self.patience = patience
        self.tokenizer = tokenizer
        self.best: float | None = None
        self.best_batch = -1
        self.evals_since_best = 0

    def eval_end(self, state: State, logger: Logger) -> None:
        if state.dataloader_label != "eval":
            return
        value = float(state.eval_metrics["eval"][self.monitor].compute())
        if self.best is None or value > self.best:
            self.best, self.best_batch, self.evals_since_best = value, int(state.timestamp.batch), 0
            if dist.get_global_rank() == 0:
                from modernenc.train.lora import plain_model

                model = state.model.module if hasattr(state.model, "module") else state.model
                # Whole or not at all: a kill while writing leaves the previous best model in place.
                # LoRA adapters are merged into a copy: best-hf is a plain transformers folder.
                write_hf_folder(plain_model(model.model), self.out_dir, self.tokenizer, tool="train")
                record(self.out_dir)  # a part of the run: force=true replaces it with the run
            dist.barrier()
        else:
            self.evals_since_best += 1
        logger.log_metrics({f"best/eval_{self.monitor}": self.best})
        if self.patience and self.evals_since_best >= self.patience:
            print(
                f"early stop: eval {self.monitor} has not improved for {self.patience} evaluations "
                f"(best {self.best:.4f} at batch {self.best_batch})"
            )
            state.stop_training()

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_batch": self.best_batch, "evals_since_best": self.evals_since_best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_batch = state["best"], state["best_batch"]
        self.evals_since_best = state["evals_since_best"]


class TrainingCurves(Callback):
    """Writes loss and learning-rate curves (and eval metrics) as `curves.png` in the save folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.history: dict[str, list[tuple[int, float]]] = {"loss": [], "lr": []}

    def batch_end(self, state: State, logger: Logger) -> None:
        step = int(state.timestamp.batch)
        # The step's loss over all its micro-batches; `state.loss` holds only the last micro-batch's.
        loss = state.total_loss_dict.get("loss/train/total", state.loss)
        if isinstance(loss, dict):
            loss = loss.get("total")
        if loss is not None:
            self.history["loss"].append((step, float(loss)))
        self.history["lr"].append((step, float(state.optimizers[0].param_groups[0]["lr"])))

    def eval_end(self, state: State, logger: Logger) -> None:
        step = int(state.timestamp.batch)
        for name, metric in state.eval_metrics.get(state.dataloader_label, {}).items():
            self.history.setdefault(f"{state.dataloader_label}/{name}", []).append(
                (step, float(metric.compute()))
            )

    def fit_end(self, state: State, logger: Logger) -> None:
        if dist.get_global_rank() == 0 and self.history["loss"]:
            plot_curves(self.history, self.path, title=state.run_name)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = state["history"]


def plot_curves(history: dict[str, list[tuple[int, float]]], path: Path, title: str = "") -> None:
    """One panel each for training loss, learning rate and the evaluation metrics, over batches."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals = [k for k in history if "/" in k and history[k]]
    fig, axes = plt.subplots(1, 3 if evals else 2, figsize=(13 if evals else 9, 3.4))
    for ax, key in zip(axes[:2], ("loss", "lr"), strict=True):
        steps, values = zip(*history[key], strict=True) if history[key] else ((), ())
        ax.plot(steps, values)
        ax.set(xlabel="batch", title="training loss" if key == "loss" else "learning rate")
    for key in evals:
        steps, values = zip(*history[key], strict=True)
        axes[2].plot(steps, values, marker="o", label=key)
    if evals:
        axes[2].set(xlabel="batch", title="evaluation")
        axes[2].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    with writing_file(path, kind=None) as tmp:  # a part of the run in the folder
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
