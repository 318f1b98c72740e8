"""Neutral helpers every layer may use: tables and text files, outputs, "did you mean", hub access, bf16.

Nothing here imports the rest of modernenc, so any layer can depend on it.
"""
