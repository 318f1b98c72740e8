"""Write the ADE corpus v2 splits: `modernenc prepare-ade`, runnable from a checkout.

Follows the published protocol: unique DRUG-AE.rel sentences are positives, unique ADE-NEG.txt sentences
negatives, negatives sub-sampled to the positives, stratified 60/20/20 -> 2,562/855/854 per class.
``--task spans`` writes the same sentences with their drug and adverse-effect mentions. The logic lives
in ``modernenc.pv.ade_data`` and ``modernenc.pv.ade_spans``.

    python data_prep/ade.py --source ../shared/data/ade_corpus_v2 --out data/ade
    python data_prep/ade.py --task spans --source ../shared/data/ade_corpus_v2 --out data/ade-spans
"""

from modernenc.cli import run_as_script

if __name__ == "__main__":
    run_as_script("prepare-ade", "data_prep/ade.py")
