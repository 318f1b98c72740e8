"""What a careful ONNX Runtime user writes to classify a file: tokenize, sort by length, batch by 64, run
the dynamic-int8 graph, softmax, threshold, write JSONL. The anchor of benchmarks/predict_vs_ort.py.

    python benchmarks/ort_int8_predict.py ONNX_DIR test.jsonl --out predictions.jsonl --threads 2
"""

import argparse
import json

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("onnx_dir", help="a `modernenc export-onnx --int8` folder")
parser.add_argument("input", help="JSONL with a 'text' field per line")
parser.add_argument("--out", required=True)
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--max-length", type=int, default=512)
parser.add_argument("--threshold", type=float, default=0.5)
args = parser.parse_args()

tokenizer = Tokenizer.from_file(f"{args.onnx_dir}/tokenizer.json")
tokenizer.enable_truncation(args.max_length)  # counts [CLS] and [SEP], which its post-processor adds
texts = [json.loads(line)["text"] for line in open(args.input, encoding="utf-8") if line.strip()]
ids = [encoding.ids for encoding in tokenizer.encode_batch(texts)]
pad = tokenizer.token_to_id("[PAD]")

options = ort.SessionOptions()
options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
session = ort.InferenceSession(
    f"{args.onnx_dir}/model_quantized.onnx", options, providers=["CPUExecutionProvider"]
)

order = np.argsort([-len(x) for x in ids], kind="stable")  # longest first: little padding per batch
probabilities = np.empty(len(ids))
for start in range(0, len(ids), 64):
    chunk = order[start : start + 64]
    longest = max(len(ids[i]) for i in chunk)
    input_ids = np.full((len(chunk), longest), pad, dtype=np.int64)
    mask = np.zeros((len(chunk), longest), dtype=np.int64)
    for row, i in enumerate(chunk):
        input_ids[row, : len(ids[i])], mask[row, : len(ids[i])] = ids[i], 1
    logits = session.run(["logits"], {"input_ids": input_ids, "attention_mask": mask})[0]
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities[chunk] = exp[:, 1] / exp.sum(axis=1)

with open(args.out, "w", encoding="utf-8") as f:
    for text, p in zip(texts, probabilities, strict=True):
        f.write(json.dumps({"text": text, "probability": float(p), "label": int(p >= args.threshold)}) + "\n")
