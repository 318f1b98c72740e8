"""Downstream tasks: data splits and baselines for fine-tuning evaluations (ADE sentence classification)."""
