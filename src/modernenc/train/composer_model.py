"""Composer glue: wrap a modernenc task model, and describe packed batches to composer's trainer."""

from __future__ import annotations

from typing import Any

import torch
from composer.core import DataSpec
from composer.metrics.nlp import LanguageCrossEntropy, MaskedAccuracy
from composer.models import ComposerModel
from torchmetrics import Metric

from modernenc.model.config import IGNORE_INDEX, RUNTIME_FIELDS
from modernenc.model.encoder import ModernEncoderPreTrainedModel
from modernenc.model.layers import EncoderLayer


class CheckpointMismatchError(ValueError):
    """A checkpoint composer loads (autoresume) holds another model than the run builds."""


MODEL_INPUTS = ("input_ids", "attention_mask", "labels", "cu_seqlens", "max_seqlen", "position_ids")


def _is_encoder_layer(module: torch.nn.Module) -> bool:
    return isinstance(module, EncoderLayer)


class ModernEncoderComposerModel(ComposerModel):
    """A masked-LM model as composer sees it: forward on a batch dict, loss from the model's output.

    Subclasses change only the evaluation metrics.
    """

    def __init__(self, model: ModernEncoderPreTrainedModel) -> None:
        super().__init__()
        self.model = model
        # composer's FSDP asks the modules it wraps these: one FSDP unit, and one activation checkpoint,
        # per encoder layer. Embeddings, norms and the tied decoder stay in the root unit, together, as
        # tying requires; without them the whole model would be one unit, gathered whole on every rank.
        model.fsdp_wrap_fn = _is_encoder_layer
        model.activation_checkpointing_fn = _is_encoder_layer
        self.train_metrics: dict[str, Metric] = {}
        self.eval_metrics: dict[str, Metric] = self.build_metrics()

    def build_metrics(self) -> dict[str, Metric]:
        return {
            "LanguageCrossEntropy": LanguageCrossEntropy(ignore_index=IGNORE_INDEX),
            "MaskedAccuracy": MaskedAccuracy(ignore_index=IGNORE_INDEX),
        }

    def get_extra_state(self) -> dict[str, Any]:
        # Stored in every composer checkpoint, so export needs nothing but the checkpoint.
        from modernenc.train.lora import lora_settings

        state = {"model_config": self.model.config.to_dict(), "architecture": self.model.hf_architecture}
        lora = lora_settings(self.model)
        return state if lora is None else {**state, "lora": lora}  # export rebuilds the adapters to merge

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if state.get("architecture") != self.model.hf_architecture or state.get("model_config") is None:
            raise CheckpointMismatchError(
                f"checkpoint holds a {state.get('architecture')} model; this run builds a "
                f"{self.model.hf_architecture}"
            )
        saved = {k: v for k, v in state["model_config"].items() if k not in RUNTIME_FIELDS}
        ours = {k: v for k, v in self.model.config.to_dict().items() if k not in RUNTIME_FIELDS}
        changed = sorted(k for k in ours if saved.get(k) != ours[k])
        if changed:
            raise CheckpointMismatchError(
                f"checkpoint's model differs from this run's in: {', '.join(changed)}"
            )

    def forward(self, batch: dict[str, Any]):
        return self.model(**{k: batch[k] for k in MODEL_INPUTS if k in batch})

    def loss(self, outputs, batch: dict[str, Any]) -> torch.Tensor:
        return outputs.loss

    def eval_forward(self, batch: dict[str, Any], outputs=None):
        return outputs if outputs is not None else self.forward(batch)

    def get_metrics(self, is_train: bool = False) -> dict[str, Metric]:
        return self.train_metrics if is_train else self.eval_metrics

    def update_metric(self, batch: dict[str, Any], outputs, metric: Metric) -> None:
        # Sparse prediction: logits have one row per labelled token, in packed order.
        labels = batch["labels"].reshape(-1)
        labels = labels[labels != IGNORE_INDEX]
        metric.update(outputs.logits, labels)


class EntityScore(Metric):
    """Strict entity precision, recall or F1 (micro over every entity) of a BIO tagger on packed batches.

    Counts true positives, predicted and gold entities (summed over ranks), sequence by sequence: an entity
    never runs from one packed sequence into the next. Positions labelled IGNORE_INDEX ([CLS], [SEP], a
    word's later sub-tokens in word-tag data) are skipped, as in the loss.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, tag_names: list[str], score: str = "f1") -> None:
        super().__init__()
        if score not in ("f1", "precision", "recall"):
            raise ValueError(f"score must be f1, precision or recall; got {score!r}")
        self.tag_names, self.score = list(tag_names), score
        for name in ("tp", "predicted", "gold"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, tag_ids: torch.Tensor, labels: torch.Tensor, cu_seqlens: torch.Tensor) -> None:
        from modernenc.tasks.spans import tag_entities

        ids, gold_ids, bounds = tag_ids.tolist(), labels.tolist(), cu_seqlens.tolist()
        for start, end in zip(bounds, bounds[1:], strict=False):
            gold = set(tag_entities(gold_ids[start:end], gold_ids[start:end], self.tag_names))
            found = set(tag_entities(ids[start:end], gold_ids[start:end], self.tag_names))
            self.tp += len(gold & found)
            self.predicted += len(found)
            self.gold += len(gold)

    def compute(self) -> torch.Tensor:
        tp, predicted, gold = (float(x) for x in (self.tp, self.predicted, self.gold))
        value = {
            "precision": tp / predicted if predicted else 0.0,
            "recall": tp / gold if gold else 0.0,
            "f1": 2 * tp / (predicted + gold) if predicted + gold else 0.0,
        }[self.score]
        return torch.tensor(value)


ENTITY_METRICS = {"EntityF1": "f1", "EntityPrecision": "precision", "EntityRecall": "recall"}


class ClassifierComposerModel(ModernEncoderComposerModel):
    """A sequence or token classifier; binary tasks report F1, precision, recall, accuracy and AUROC of the
    positive class (the event to detect), multi-class tasks macro F1 and accuracy. A token classifier whose
    labels are BIO tags also reports strict entity F1, precision and recall (``EntityF1`` etc.)."""

    def __init__(
        self, model: ModernEncoderPreTrainedModel, positive_index: int = 1, token_level: bool = False
    ) -> None:
        self.positive_index = positive_index
        self.token_level = token_level
        super().__init__(model)

    def build_metrics(self) -> dict[str, Metric]:
        from torchmetrics import classification as tm

        n = self.model.config.num_labels
        if self.token_level and self.tag_names is not None:
            return {
                **{name: EntityScore(self.tag_names, score) for name, score in ENTITY_METRICS.items()},
                "F1": tm.MulticlassF1Score(n, average="macro"),
                "Accuracy": tm.MulticlassAccuracy(n),
            }
        if n == 2:
            return {
                "F1": tm.BinaryF1Score(),
                "Precision": tm.BinaryPrecision(),
                "Recall": tm.BinaryRecall(),
                "Accuracy": tm.BinaryAccuracy(),
                "AUROC": tm.BinaryAUROC(),
            }
        return {"F1": tm.MulticlassF1Score(n, average="macro"), "Accuracy": tm.MulticlassAccuracy(n)}

    @property
    def tag_names(self) -> list[str] | None:
        """The BIO tags in class order, or None when the labels are not BIO tags."""
        from modernenc.tasks.entities import is_bio

        config = self.model.config
        names = [config.id2label.get(i, str(i)) for i in range(config.num_labels)]
        return names if is_bio(names) else None

    def update_metric(self, batch: dict[str, Any], outputs, metric: Metric) -> None:
        if isinstance(metric, EntityScore):
            metric.update(outputs.logits.argmax(-1), batch["labels"], batch["cu_seqlens"])
            return
        probs, labels = outputs.logits.float().softmax(-1), batch["labels"]
        if self.token_level:  # [CLS]/[SEP] (and, for pre-split words, later sub-tokens) are unlabelled
            keep = labels != IGNORE_INDEX
            probs, labels = probs[keep], labels[keep]
        if self.model.config.num_labels == 2:
            metric.update(probs[:, self.positive_index], (labels == self.positive_index).long())
        else:
            metric.update(probs, labels)


def packed_batch_spec(dataloader) -> DataSpec:
    """A packed micro-batch counts its real sequences and tokens, and is never split further."""
    return DataSpec(
        dataloader,
        get_num_samples_in_batch=lambda batch: int(batch["num_sequences"]),
        get_num_tokens_in_batch=lambda batch: int(batch["num_real_tokens"]),
        split_batch=lambda batch, microbatch_size: [batch],
    )
