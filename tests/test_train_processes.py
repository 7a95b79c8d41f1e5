"""``emvos train`` in its own processes: SIGTERM saves and exits cleanly; 2-process gloo DDP matches 1 process."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from emvos.train import Trainer, load_config

pytestmark = pytest.mark.slow  # see the slow marker in pyproject.toml

REPO_TESTS = Path(__file__).resolve().parent

#: Runs ``emvos`` with the tiny test encoder and a ``signal-test`` dataset that sends SIGTERM to its
#: process when it reads sample ``$EMVOS_TEST_SIGNAL_AT``.
DRIVER = f"""
import os, signal, sys
sys.path.insert(0, {str(REPO_TESTS)!r})
import conftest  # registers the tiny-test encoder, one thread
from emvos.train import SyntheticClips, register_dataset

class SignalAt(SyntheticClips):
    def __getitem__(self, k):
        if k == int(os.environ.get("EMVOS_TEST_SIGNAL_AT", "-1")):
            os.kill(os.getpid(), signal.SIGTERM)
        return super().__getitem__(k)

@register_dataset("signal-test", reads_files=False)
def build(data, clip_len, size, seed, exclude):
    return SignalAt(clip_len, size, seed)

from emvos.cli import main
sys.exit(main())
"""


def write_config(path: Path, out: Path, batch_size: int = 4, swap: float = 0.5, kind: str = "signal-test") -> Path:
    config = {
        "model": {"encoder": "tiny-test", "key_channels": 8, "decoder_widths": [8, 8, 8]},
        "stages": [{"name": "s", "data": {"kind": kind}, "iterations": 6, "batch_size": batch_size,
                    "clip_len": 3, "crop": 32, "lr": 3e-3}],
        "swap_attach_p": swap, "out": str(out), "workers": 0, "log_every": 1, "tensorboard": False,
        "device": "cpu",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def losses(out: Path) -> list[float]:
    with (out / "metrics.csv").open() as f:
        return [float(r["loss"]) for r in csv.DictReader(f) if r["loss"]]


def run(tmp_path: Path, args: list[str], env: dict[str, str] | None = None,
        launcher: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    return subprocess.run([sys.executable, *(launcher or []), str(driver), "train", "--quiet", *args],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


def test_sigterm_saves_last_and_exits_without_a_traceback(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", tmp_path / "run", batch_size=2)
    stopped = run(tmp_path, ["--config", str(config)], env={"EMVOS_TEST_SIGNAL_AT": "4"})  # iteration 2
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert "stopped by SIGTERM at step 3" in stopped.stderr and "--resume" in stopped.stderr
    assert len(losses(tmp_path / "run")) == 3

    resumed = run(tmp_path, ["--resume", str(tmp_path / "run" / "last.pt")])
    assert resumed.returncode == 0, resumed.stderr
    assert "trained 6 iterations" in resumed.stdout
    assert len(losses(tmp_path / "run")) == 6


def test_two_process_gloo_ddp_matches_one_process(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", tmp_path / "two", swap=1.0, kind="synthetic")  # every batch
    single = Trainer(load_config(config, ["out=" + str(tmp_path / "one")]), progress=False).fit()
    ddp = run(tmp_path, ["--config", str(config)],
              launcher=["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"])
    assert ddp.returncode == 0, ddp.stderr
    assert ddp.stdout.count("trained 6 iterations") == 1  # rank 0 reports
    assert losses(tmp_path / "two") == pytest.approx(list(single.losses.values()), rel=1e-5)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["config.yaml", "last.pt", "metrics.csv"]
