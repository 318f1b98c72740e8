"""Downstream tasks (ADE sentence classification): splits, baselines, metrics, thresholds, prediction."""
