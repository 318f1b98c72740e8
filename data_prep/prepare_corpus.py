"""Tokenize a raw corpus into MDS shards: `modernenc prepare-data`, runnable from a checkout.

    python data_prep/prepare_corpus.py --input ../shared/data/wikipedia_en --format wikiextractor \\
        --tokenizer ../shared/data/tokenizers/modernbert --output data/mds/wiki --max-length 1024
"""

from modernenc.cli import run_as_script

if __name__ == "__main__":
    run_as_script("prepare-data", "data_prep/prepare_corpus.py")
