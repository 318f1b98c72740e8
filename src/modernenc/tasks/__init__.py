"""Downstream tasks: sequence and token classification data (labels, words, character spans), metrics,
thresholds, strict entity scores, batch prediction and span extraction."""
