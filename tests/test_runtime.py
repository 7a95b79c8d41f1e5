"""emvos.runtime: the process-wide settings the emvos command applies before importing PyTorch."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from emvos.runtime import HUGE_PAGES_ENV, huge_pages_enabled

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")

#: Page faults of filling a fresh 64 MiB tensor (16,384 with 4 KiB pages), after ``use_huge_pages``.
FAULTS = """
import resource, sys
from emvos.runtime import use_huge_pages
print(use_huge_pages())
import torch
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.ones(16 << 20)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(min(faults() for _ in range(3)))
"""


def _run(code: str, **env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k != HUGE_PAGES_ENV}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                         check=True)
    return out.stdout.split()


@pytest.mark.skipif(platform.system() != "Linux" or not THP.is_file() or "[never]" in THP.read_text(),
                    reason="needs Linux with transparent huge pages available (madvise or always)")
def test_use_huge_pages_before_torch_cuts_page_faults() -> None:
    on, faults_on = _run(FAULTS)
    off, faults_off = _run(FAULTS, **{HUGE_PAGES_ENV: "0"})  # the user's setting wins
    assert (on, off) == ("True", "False")
    assert int(faults_off) >= 16_000 and int(faults_on) < 4_000


def test_after_torch_it_leaves_the_environment_alone() -> None:
    out = _run("import torch\nfrom emvos.runtime import use_huge_pages\nimport os\n"
               f"print(use_huge_pages(), os.environ.get({HUGE_PAGES_ENV!r}))")
    assert out == ["False", "None"]


def test_enabled_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HUGE_PAGES_ENV, "1")
    assert huge_pages_enabled() is (platform.system() == "Linux")
    monkeypatch.setenv(HUGE_PAGES_ENV, "0")
    assert huge_pages_enabled() is False
