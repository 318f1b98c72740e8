"""Train a byte-level BPE tokenizer with ModernBERT's special tokens, saved in Hugging Face format.

The result mirrors ModernBERT's tokenizer: NFC normalisation, byte-level pre-tokenisation (no prefix
space), ``[CLS] A [SEP]`` / ``[CLS] A [SEP] B [SEP]`` templates, ``[MASK]`` with lstrip, and the vocabulary
padded with ``[unusedN]`` tokens to a multiple of 64 (tensor-core friendly embedding sizes).

The command is `modernenc train-tokenizer` (`python data_prep/train_tokenizer.py`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from tokenizers import (
    AddedToken,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

SPECIAL_TOKENS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]


def train_bpe(
    texts: Iterator[str], vocab_size: int, min_frequency: int = 2, pad_to_multiple_of: int = 64
) -> Tokenizer:
    """Train the BPE model; ``vocab_size`` counts special tokens, padding adds ``[unusedN]`` on top."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[AddedToken(t, lstrip=t == "[MASK]", normalized=False) for t in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable: no [UNK] at run time
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    size = tok.get_vocab_size(with_added_tokens=True)
    if pad_to_multiple_of > 1 and size % pad_to_multiple_of:
        n = pad_to_multiple_of - size % pad_to_multiple_of
        tok.add_tokens([AddedToken(f"[unused{i}]", normalized=False) for i in range(n)])
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return tok


def save_hf(tok: Tokenizer, out: Path, model_max_length: int = 8192) -> None:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json (AutoTokenizer-loadable)."""
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        mask_token=AddedToken("[MASK]", lstrip=True, normalized=False),
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=True,
    )
    hf.model_input_names = ["input_ids", "attention_mask"]
    hf.save_pretrained(str(out))
