"""The slow-bf16 warning follows the CPU's real feature flags, read independently from /proc/cpuinfo."""

import logging
import sys
from pathlib import Path

import pytest
import torch

from modernenc.utils.precision import has_fast_bf16, warn_if_bf16_is_slow


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/cpuinfo")
def test_fast_bf16_matches_the_cpu_flags():
    flags = next(
        line.split(":", 1)[1].split()
        for line in Path("/proc/cpuinfo").read_text().splitlines()
        if line.startswith("flags")
    )
    assert has_fast_bf16("cpu") == ("avx512_bf16" in flags or "amx_tile" in flags)


@pytest.mark.parametrize("fast", [True, False])
def test_warning_only_where_bf16_is_emulated(fast, monkeypatch, caplog):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: fast)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    with caplog.at_level(logging.WARNING, logger="modernenc.utils.precision"):
        assert warn_if_bf16_is_slow(torch.device("cpu")) is (not fast)
    assert ("no bf16 matrix units" in caplog.text) is (not fast)
