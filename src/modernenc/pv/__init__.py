"""The pharmacovigilance application: adverse drug event (ADE) detection built on the general library.

The ADE corpus and its leak-free splits, the quickstart chain and its results table, the demo, the
TF-IDF baseline and the published reference rows live here, above `model`, `data`, `tasks` and `train`,
which know nothing of ADE. Serving and span extraction build on this layer.
"""
