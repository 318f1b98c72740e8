"""The one "did you mean" helper behind every unknown-name error."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the closest of `choices`, or an empty string when none is close."""
    near = difflib.get_close_matches(name, list(choices), 1)
    return f" (did you mean {near[0]!r}?)" if near else ""
