"""The scripts in ``benchmarks/`` run and print their tables (at tiny sizes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # see the slow marker in pyproject.toml

SCRIPTS = Path(__file__).resolve().parent.parent / "benchmarks"


def _run(script: str, *args: str) -> str:
    result = subprocess.run([sys.executable, str(SCRIPTS / script), *args], capture_output=True, text=True,
                            check=False, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.parametrize(("model", "precision"), [("shipped", "fp32"), ("paper", "fp32"), ("shipped", "bf16")])
def test_frame_parts_times_every_part_and_encoder_block(model: str, precision: str) -> None:
    out = _run("frame_parts.py", "--model", model, "--resolution", "64", "--frames", "2", "--threads", "1",
               "--objects", "2", "--precision", precision)
    for part in ("| prepare |", "| encoder |", "| match first |", "| match previous |", "| decoder |",
                 "| step, whole |"):
        assert part in out
    blocks = "| blocks.1.0 |" if model == "shipped" else "| denseblock3 |"
    assert blocks in out, out
