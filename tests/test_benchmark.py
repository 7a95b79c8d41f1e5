"""``emvos benchmark``: segment, score and time a DAVIS split, whole or in shards."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from emvos.cli import main
from emvos.model.checkpoint import save_checkpoint
from emvos.model.config import ModelConfig
from emvos.model.network import EMVOS


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, EMVOS(ModelConfig(encoder="tiny-test"), encoder_weights=None))
    return path


@pytest.fixture(scope="module")
def mini_davis(davis2017_sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DAVIS-2017-shaped folder with two short sequences cut from ``schoolgirls``."""
    root = tmp_path_factory.mktemp("davis")
    for name, start in (("girls-a", 0), ("girls-b", 40)):
        for kind, ext in (("JPEGImages", "jpg"), ("Annotations", "png")):
            src = sorted((davis2017_sample_root / kind / "480p" / "schoolgirls").glob(f"*.{ext}"))[start:start + 6]
            dst = root / kind / "480p" / name
            dst.mkdir(parents=True)
            for i, f in enumerate(src):
                shutil.copy(f, dst / f"{i:05d}.{ext}")
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("girls-a\ngirls-b\n")
    return root


def _bench(root: Path, out: Path, checkpoint: Path, *extra: str) -> int:
    return main(["benchmark", "--davis-root", str(root), "--year", "2017", "--split", "val", "--out", str(out),
                 "--checkpoint", str(checkpoint), "--resolution", "0", "--threads", "1", "--quiet", *extra])


@pytest.mark.slow
def test_benchmark_on_the_davis2017_sample(davis2017_sample_root: Path, tmp_path: Path, checkpoint: Path) -> None:
    out = tmp_path / "bench"
    assert main(["benchmark", "--davis-root", str(davis2017_sample_root), "--split", "train", "--out", str(out),
                 "--checkpoint", str(checkpoint), "--resolution", "0", "--threads", "1", "--quiet"]) == 0
    summary = json.loads((out / "benchmark.json").read_text())
    assert summary["frames"] == 80 and summary["sequences"][0]["objects"] == 7
    assert summary["model_fps"] > 0 and summary["end_to_end_fps"] > 0 and summary["peak_rss_mb"] > 0
    assert 0 <= summary["global"]["J&F-Mean"] <= 1
    assert len(list((out / "results" / "schoolgirls").glob("*.png"))) == 80
    rows = list(csv.DictReader((out / "results" / "global_results-train.csv").open()))
    assert float(rows[0]["J&F-Mean"]) == pytest.approx(summary["global"]["J&F-Mean"], abs=1e-3)
    per_sequence = list(csv.DictReader((out / "benchmark.csv").open()))
    assert per_sequence[0]["Sequence"] == "schoolgirls"


@pytest.mark.slow
def test_shards_merge_to_the_unsharded_result(mini_davis: Path, tmp_path: Path, checkpoint: Path) -> None:
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    assert _bench(mini_davis, whole, checkpoint) == 0
    assert _bench(mini_davis, sharded, checkpoint, "--shard", "0/2") == 0
    assert not (sharded / "benchmark.json").exists()
    assert _bench(mini_davis, sharded, checkpoint, "--shard", "1/2") == 0
    assert _bench(mini_davis, sharded, checkpoint, "--merge") == 0
    a = json.loads((whole / "benchmark.json").read_text())
    b = json.loads((sharded / "benchmark.json").read_text())
    assert a["global"] == b["global"]
    assert [s["sequence"] for s in b["sequences"]] == ["girls-a", "girls-b"]


@pytest.mark.slow
def test_merge_without_all_shards_is_an_input_error(mini_davis: Path, tmp_path: Path, checkpoint: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "partial"
    assert _bench(mini_davis, out, checkpoint, "--shard", "1/2") == 0
    assert _bench(mini_davis, out, checkpoint, "--merge") == 2
    assert "girls-a" in capsys.readouterr().err


def test_unknown_sequence_is_an_input_error(mini_davis: Path, tmp_path: Path, checkpoint: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert _bench(mini_davis, tmp_path / "x", checkpoint, "--sequences", "nope") == 2
    assert "nope" in capsys.readouterr().err


@pytest.mark.slow
def test_merge_refuses_shards_of_runs_split_different_ways(mini_davis: Path, tmp_path: Path, checkpoint: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mixed"
    assert _bench(mini_davis, out, checkpoint, "--shard", "0/2") == 0
    assert _bench(mini_davis, out, checkpoint, "--shard", "1/2") == 0
    stale = out / "timings" / "shard-0-of-3.json"
    stale.write_text((out / "timings" / "shard-0-of-2.json").read_text())
    assert _bench(mini_davis, out, checkpoint, "--merge") == 2
    assert "split 2 and 3 ways" in capsys.readouterr().err
    stale.write_text("{half a fi")
    stale.rename(out / "timings" / "shard-1-of-2.json")
    assert _bench(mini_davis, out, checkpoint, "--merge") == 2
    err = capsys.readouterr().err
    assert "shard-1-of-2.json: unreadable shard timings" in err and err.count("\n") == 1
    assert not (out / "benchmark.json").exists()


def test_an_unsplit_run_ignores_shard_files_of_other_runs(mini_davis: Path, tmp_path: Path, checkpoint: Path) -> None:
    out = tmp_path / "again"
    assert _bench(mini_davis, out, checkpoint, "--shard", "1/2") == 0
    assert _bench(mini_davis, out, checkpoint) == 0  # not merged with the stale half
    frames = len(list((mini_davis / "JPEGImages" / "480p").glob("*/*.jpg")))
    assert json.loads((out / "benchmark.json").read_text())["frames"] == frames
