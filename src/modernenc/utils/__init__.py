"""Neutral helpers every layer may use: tables and text files, "did you mean", hub access, bf16 checks.

Nothing here imports the rest of modernenc, so any layer can depend on it.
"""
