"""CPU inference throughput against `transformers` and ONNX Runtime: `modernenc bench`, from a checkout.

python benchmarks/inference_cpu.py --shape base --repeats 5
"""

from modernenc.cli import run_as_script

if __name__ == "__main__":
    run_as_script("bench", "benchmarks/inference_cpu.py")
