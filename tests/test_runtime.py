"""emvos.runtime: the process-wide settings the emvos command applies before importing PyTorch."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from emvos.runtime import (
    HUGE_PAGES_ENV,
    KEPT_MEMORY_BYTES,
    MMAP_THRESHOLD_ENV,
    TRIM_THRESHOLD_ENV,
    huge_pages_enabled,
    keep_freed_memory,
)

pytestmark = pytest.mark.slow  # see the slow marker in pyproject.toml

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
    clean = {k: v for k, v in os.environ.items() if k not in (HUGE_PAGES_ENV, MMAP_THRESHOLD_ENV, TRIM_THRESHOLD_ENV)}
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


#: Page faults of the last of six "frames" of two convolutions at 480p sizes (a 40 MiB and a 10 MiB result).
FRAME_FAULTS = """
import resource
from emvos.runtime import keep_freed_memory
print(keep_freed_memory() if KEEP else False)
import torch
import torch.nn.functional as F
x = torch.rand(1, 16, 240, 432)
w1, w2 = torch.rand(96, 16, 1, 1), torch.rand(24, 96, 3, 3)
def frame():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    F.conv2d(F.conv2d(x, w1).relu_(), w2, stride=2, padding=1).sum()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print([frame() for _ in range(6)][-1])
"""


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in (MMAP_THRESHOLD_ENV, TRIM_THRESHOLD_ENV)}


@pytest.mark.skipif(platform.system() != "Linux", reason="glibc's allocator settings are Linux-only")
def test_keep_freed_memory_reuses_pages_frame_after_frame() -> None:
    env = {**_clean_env(), HUGE_PAGES_ENV: "0"}
    kept, default = (subprocess.run([sys.executable, "-c", f"KEEP = {keep}" + FRAME_FAULTS], env=env,
                                    capture_output=True, text=True, check=True).stdout.split()
                     for keep in (True, False))
    assert kept[0] == "True" and int(kept[1]) < 100
    assert int(default[1]) >= 10_000  # the 40 MiB result alone is 10,240 pages of 4 KiB, faulted in every frame


@pytest.mark.skipif(platform.system() != "Linux", reason="glibc's allocator settings are Linux-only")
def test_keep_freed_memory_sets_the_environment_for_child_processes() -> None:
    code = ("import os\nfrom emvos.runtime import keep_freed_memory\n"
            f"print(keep_freed_memory(), os.environ[{MMAP_THRESHOLD_ENV!r}], os.environ[{TRIM_THRESHOLD_ENV!r}])")
    out = subprocess.run([sys.executable, "-c", code], env=_clean_env(), capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["True", str(KEPT_MEMORY_BYTES), str(KEPT_MEMORY_BYTES)]


def test_keep_freed_memory_leaves_a_users_threshold_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MMAP_THRESHOLD_ENV, "65536")
    monkeypatch.delenv(TRIM_THRESHOLD_ENV, raising=False)
    assert keep_freed_memory() is False
    assert os.environ[MMAP_THRESHOLD_ENV] == "65536" and TRIM_THRESHOLD_ENV not in os.environ
