"""Write the ADE corpus v2 splits: `modernenc prepare-ade`, runnable from a checkout.

Follows the published protocol: unique DRUG-AE.rel sentences are positives, unique ADE-NEG.txt sentences
negatives, negatives sub-sampled to the positives, stratified 60/20/20 -> 2,562/855/854 per class.
The logic lives in ``modernenc.pv.ade_data``.

    python data_prep/ade.py --source ../shared/data/ade_corpus_v2 --out data/ade
"""

from modernenc.cli import run_as_script

if __name__ == "__main__":
    run_as_script("prepare-ade", "data_prep/ade.py")
