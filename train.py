"""Train a modernenc model from a yaml recipe: `modernenc train`, runnable from a checkout.

    composer train.py yamls/quickstart/pretrain.yaml [key=value ...]     # one process per device
    python train.py yamls/quickstart/pretrain.yaml max_duration=20ba     # a single process
    composer -n 2 -m modernenc.train quickstart/pretrain                 # installed, no checkout needed

Overrides use dotted keys (`optimizer.lr=3e-4`, `data.micro_batch_size=4`) and are checked against the
same typed schema as the yaml (`src/modernenc/train/config.py`).
"""

from modernenc.cli import run_as_script

if __name__ == "__main__":
    run_as_script("train", "train.py")
