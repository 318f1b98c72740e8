"""A five-minute tour of the foundation, on CPU, with the bundled ADE sentences and ModernBERT's tokenizer.

1. build a small random ModernBERT-style classifier;
2. classify ADE sentences on the unpadded fast path;
3. export it as a Hugging Face folder and check `transformers` loads it and gives the same logits;
4. run `transformers.pipeline("text-classification")` on the export, offline.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from modernenc.model import ModernEncoderConfig, ModernEncoderForSequenceClassification
from modernenc.pv.ade_data import load_ade_sentences
from modernenc.pv.bundled_data import modernbert_tokenizer_dir, shared_data_dir


def ade_sentences(limit: int) -> list[str]:
    """First `limit` unique sentences of the ADE corpus, positives and negatives interleaved."""
    positives, negatives = load_ade_sentences(shared_data_dir() / "ade_corpus_v2")
    mixed = [s for pair in zip(positives, negatives, strict=False) for s in pair]
    return mixed[:limit]


def run_demo(out_dir: Path, preset: str = "mini", num_sentences: int = 256, overwrite: bool = False) -> None:
    from modernenc.utils.outputs import check_output_folder, writing_folder

    check_output_folder(out_dir, kind="hf-model", force=overwrite, what="--out folder")  # before any work
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    torch.set_num_threads(max(1, torch.get_num_threads()))
    tokenizer = AutoTokenizer.from_pretrained(modernbert_tokenizer_dir())
    print(f"==> [1/4] building a random '{preset}' classifier (labels no_ade / ade)")
    config = ModernEncoderConfig.from_preset(preset, num_labels=2, id2label={0: "no_ade", 1: "ade"})
    model = ModernEncoderForSequenceClassification(config).eval()
    print(f"    {model.num_parameters() / 1e6:.1f}M parameters")

    sentences = ade_sentences(num_sentences)
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    real, padded = int(batch["attention_mask"].sum()), batch["attention_mask"].numel()
    print(f"==> [2/4] classifying {len(sentences)} ADE sentences: {real} real tokens, {padded} when padded")
    with torch.inference_mode():
        start = time.perf_counter()
        ours = model(batch["input_ids"], batch["attention_mask"]).logits
        elapsed = time.perf_counter() - start
    print(
        f"    {len(sentences) / elapsed:,.0f} sentences/s, {real / elapsed:,.0f} real tok/s (random weights)"
    )

    print(f"==> [3/4] exporting to {out_dir} and reloading with transformers")
    with writing_folder(out_dir, kind="hf-model", tool="demo") as staging:
        model.save_pretrained(staging, tokenizer_path=modernbert_tokenizer_dir())
    hf = AutoModelForSequenceClassification.from_pretrained(out_dir, attn_implementation="sdpa").eval()
    with torch.inference_mode():
        theirs = hf(**batch).logits
    print(f"    max |logit difference| vs transformers: {float((ours - theirs).abs().max()):.2e}")

    print("==> [4/4] transformers.pipeline('text-classification') on the export")
    classify = pipeline("text-classification", model=str(out_dir), device=-1)
    for sentence, result in zip(sentences[:2], classify(sentences[:2]), strict=True):
        print(f"    {result['label']:>6} {result['score']:.3f}  {sentence[:70]}")
    print(f"Done. The exported folder is {out_dir}.")
