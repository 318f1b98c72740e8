"""`python -m modernenc.train YAML [key=value ...]`, and so `composer -n N -m modernenc.train ...`."""

from modernenc.cli import run_as_script

if __name__ == "__main__":
    run_as_script("train", "python -m modernenc.train")
