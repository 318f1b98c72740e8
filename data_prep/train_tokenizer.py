"""Train a ModernBERT-style BPE tokenizer: `modernenc train-tokenizer`, runnable from a checkout.

    python data_prep/train_tokenizer.py --input ../shared/data/pubmed --format jsonl \\
        --vocab-size 32768 --output tokenizers/pubmed-32k
"""

from modernenc.cli import run_as_script

if __name__ == "__main__":
    run_as_script("train-tokenizer", "data_prep/train_tokenizer.py")
