"""Task heads: masked language modelling, sequence classification, token classification.

Each task model holds the encoder as `model` and its head as `head` (+ `decoder` or `classifier`), the
layout of `transformers`' ModernBert classes, so checkpoints map name for name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import MaskedLMOutput, SequenceClassifierOutput, TokenClassifierOutput

from modernenc.model.activations import ACTIVATIONS
from modernenc.model.config import IGNORE_INDEX, ModernEncoderConfig
from modernenc.model.encoder import ModernEncoderModel, ModernEncoderPreTrainedModel, PackedEncoding
from modernenc.model.layers import layer_norm
from modernenc.model.padding import sequence_ids_from_cu_seqlens


class PredictionHead(nn.Module):
    """ModernBERT's head block, shared by every task: dense -> activation -> norm."""

    def __init__(self, config: ModernEncoderConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.act = ACTIVATIONS[config.classifier_activation]
        self.norm = layer_norm(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.dense(x)))


class ModernEncoderForMaskedLM(ModernEncoderPreTrainedModel):
    """Encoder + MLM head whose decoder shares the token-embedding matrix (unless `tie_word_embeddings` is
    off) and keeps its own bias."""

    hf_architecture = "ModernBertForMaskedLM"

    def __init__(self, config: ModernEncoderConfig) -> None:
        super().__init__(config)
        self.model = ModernEncoderModel(config)
        self.head = PredictionHead(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=config.decoder_bias)
        self.post_init(exclude=self.model)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Share the decoder's weight with the token embeddings, unless `tie_word_embeddings` is off."""
        if self.config.tie_word_embeddings:
            self.decoder.weight = self.model.embeddings.tok_embeddings.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> MaskedLMOutput:
        enc = self.model.encode(input_ids, attention_mask, cu_seqlens, max_seqlen, position_ids)
        hidden = enc.hidden
        packed_labels = enc.pack_labels(labels) if labels is not None else None
        sparse = packed_labels is not None and self.config.sparse_prediction
        if sparse:
            # Only labelled positions reach the head and the vocab-sized decoder.
            labelled = packed_labels != IGNORE_INDEX
            hidden, packed_labels = hidden[labelled], packed_labels[labelled]
        logits = self.decoder(self.head(hidden))
        loss = None
        if packed_labels is not None:
            loss = F.cross_entropy(logits.float(), packed_labels, ignore_index=IGNORE_INDEX)
        return MaskedLMOutput(loss=loss, logits=logits if sparse else enc.to_padded(logits))


def pool(enc: PackedEncoding, mode: str) -> torch.Tensor:
    """One vector per sequence: its first token (`cls`) or the mean over its real tokens (`mean`).

    Empty sequences (all-padding rows) pool to zeros rather than NaN.
    """
    cu = enc.layout.cu_seqlens.long()
    lengths = cu[1:] - cu[:-1]
    num_seqs = lengths.shape[0]
    hidden = enc.hidden
    if mode == "cls":
        first = cu[:-1].clamp(max=max(hidden.shape[0] - 1, 0))
        pooled = hidden[first] if hidden.shape[0] else hidden.new_zeros(num_seqs, hidden.shape[1])
        return pooled * (lengths > 0).unsqueeze(1).to(pooled.dtype)
    seq_ids = sequence_ids_from_cu_seqlens(enc.layout.cu_seqlens, hidden.shape[0])
    sums = hidden.new_zeros(num_seqs, hidden.shape[1], dtype=torch.float32)
    sums.index_add_(0, seq_ids, hidden.float())
    return (sums / lengths.clamp(min=1).unsqueeze(1)).to(hidden.dtype)


def classification_loss(
    logits: torch.Tensor, labels: torch.Tensor, config: ModernEncoderConfig
) -> torch.Tensor:
    """Loss chosen by `problem_type`, inferred the way `transformers` does when unset."""
    problem = config.problem_type
    if problem is None:
        if config.num_labels == 1:
            problem = "regression"
        elif labels.dtype in (torch.long, torch.int):
            problem = "single_label_classification"
        else:
            problem = "multi_label_classification"
    logits = logits.float()
    if problem == "regression":
        return (
            F.mse_loss(logits.squeeze(-1), labels.float().view(-1))
            if config.num_labels == 1
            else F.mse_loss(logits, labels.float())
        )
    if problem == "single_label_classification":
        return F.cross_entropy(logits.view(-1, config.num_labels), labels.view(-1), ignore_index=IGNORE_INDEX)
    return F.binary_cross_entropy_with_logits(logits, labels.float())


class _ClassifierModel(ModernEncoderPreTrainedModel):
    """Encoder + head block + dropout + a linear classifier (which keeps its bias, as in `transformers`)."""

    def __init__(self, config: ModernEncoderConfig) -> None:
        super().__init__(config)
        self.model = ModernEncoderModel(config)
        self.head = PredictionHead(config)
        self.drop = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init(exclude=self.model)


class ModernEncoderForSequenceClassification(_ClassifierModel):
    """One prediction per sequence, from CLS or mask-aware mean pooling (`config.classifier_pooling`)."""

    hf_architecture = "ModernBertForSequenceClassification"

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> SequenceClassifierOutput:
        enc = self.model.encode(input_ids, attention_mask, cu_seqlens, max_seqlen, position_ids)
        pooled = pool(enc, self.config.classifier_pooling)
        logits = self.classifier(self.drop(self.head(pooled)))
        loss = classification_loss(logits, labels, self.config) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


class ModernEncoderForTokenClassification(_ClassifierModel):
    """One prediction per token; logits come back shaped like the input."""

    hf_architecture = "ModernBertForTokenClassification"

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        max_seqlen: int | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> TokenClassifierOutput:
        enc = self.model.encode(input_ids, attention_mask, cu_seqlens, max_seqlen, position_ids)
        logits = self.classifier(self.drop(self.head(enc.hidden)))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float(), enc.pack_labels(labels), ignore_index=IGNORE_INDEX)
        return TokenClassifierOutput(loss=loss, logits=enc.to_padded(logits))
