"""``emvos speed``: the speed, work and memory sweep, its reports, and its command line (tiny models and sizes)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from emvos.cli import main
from emvos.eval import speed
from emvos.eval.speed import DavisSubset, ModelSpec, SpeedRun, SweepSettings, SyntheticVideo, time_model
from emvos.eval.speed_report import format_markdown, format_text, targets
from emvos.eval.speed_settings import QUICK
from emvos.inference.predictor import VideoPredictor
from emvos.model.checkpoint import save_checkpoint
from emvos.model.config import ModelConfig
from emvos.model.network import EMVOS

pytestmark = pytest.mark.slow  # see the slow marker in pyproject.toml

TINY = ModelConfig(encoder="tiny-test")
SETTINGS = SweepSettings(modes=("fp32-unopt", "fp32"), objects=(1, 2), resolutions=(64,), lengths=(3, 6), warmup=1,
                         cell_seconds=0.0, min_frames=1, max_frames=2, small_kernels=True)
#: Stands in for the official ``emvos.py``: the same call, one convolution per object and propagated frame.
FAKE_OFFICIAL = '''
import torch
from torch import nn


class EMVOS(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, imgs, given_masks, val_frame_ids):
        masks = [given_masks[0]]
        for i in range(1, imgs.shape[1]):
            for _ in range(int(given_masks[0].max())):
                self.conv(imgs[:, i])
            masks.append(given_masks[0])
        return {"masks": torch.stack(masks, dim=1)}
'''


@pytest.fixture(scope="module")
def official_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("EMVOS")
    (repo / "emvos.py").write_text(FAKE_OFFICIAL)
    return repo


@pytest.fixture(scope="module")
def summary(official_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("speed")
    models = {"paper": ModelSpec("tiny paper", TINY),
              "shipped": ModelSpec("tiny shipped", replace(TINY, key_channels=8, decoder_widths=(4, 8, 8)))}
    SpeedRun(SETTINGS, models, torch.device("cpu"), out, "emvos speed --test", official_repo).run()
    return json.loads((out / "speed.json").read_text())


def test_summary_has_every_part(summary: dict) -> None:
    assert summary["command"] == "emvos speed --test"
    assert summary["machine"]["cores"] >= 1 and summary["machine"]["torch"] == torch.__version__
    assert summary["settings"]["modes"] == ["fp32-unopt", "fp32"]
    assert all(summary["peak"][k] > 0 for k in ("matmul-fp32", "conv3x3-fp32", "fp32", "bf16"))
    assert set(summary["models"]) == {"paper", "shipped"}
    assert summary["models"]["paper"]["weights"] == "random" and summary["notes"]
    cells = summary["cells"]
    assert len(cells) == 2 * 2 * 2  # models x modes x objects
    for cell in cells:
        assert cell["model_fps"] > 0 and cell["end_to_end_fps"] > 0 and 1 <= cell["frames"] <= 2
        assert cell["end_to_end_frames"] == cell["frames"] + 1
        assert cell["gflops_per_s"] > 0 and 0 < cell["peak_fraction"]
        assert cell["peak_rss_mb"] > 0 and "peak_vram_mb" not in cell
    reference = [c for c in cells if c["mode"] == "fp32-unopt"]
    assert all(c["agreement"] is None for c in reference)
    optimized = [c for c in cells if c["mode"] == "fp32"]
    assert all(0 <= c["agreement"] <= 100 and c["agreement_frames"] >= 1 for c in optimized)


def test_flops_are_positive_and_the_decoder_scales_with_objects(summary: dict) -> None:
    for model in ("paper", "shipped"):
        one, two = (next(f for f in summary["flops"] if f["model"] == model and f["objects"] == k) for k in (1, 2))
        assert 0 < one["encoder_gflops"] < one["gflops_per_frame"] < two["gflops_per_frame"]
        assert two["encoder_gflops"] == one["encoder_gflops"]
        assert two["decoder_gflops"] == pytest.approx(2 * one["decoder_gflops"])
        assert one["gflops_first_frame"] < one["gflops_per_frame"]


def test_official_and_length_sweeps(summary: dict, official_repo: Path) -> None:
    official = summary["official"]
    assert official["source"] == f"this run: {official_repo}" and official["resolution"] == 64
    rows = {r["objects"]: r for r in official["rows"]}
    assert rows[1]["seconds_per_frame"] > 0 and rows[2]["gflops_per_frame"] == pytest.approx(
        2 * rows[1]["gflops_per_frame"])
    lengths = summary["lengths"]
    assert lengths["model"] == "shipped" and [r["frames"] for r in lengths["rows"]] == [3, 6]
    assert all(r["peak_rss_mb"] > 0 for r in lengths["rows"]) and lengths["rss_ratio"] > 0


def test_official_timed_in_processes_of_its_own_as_it_is_and_tuned(official_repo: Path) -> None:
    for tuned in (False, True):
        rows = speed.time_official_isolated(official_repo, 64, (1, 2), SETTINGS, torch.device("cpu"), tuned)
        assert [r["objects"] for r in rows] == [1, 2] and all(r["seconds_per_frame"] > 0 for r in rows)
        assert rows[1]["gflops_per_frame"] == pytest.approx(2 * rows[0]["gflops_per_frame"])


def test_official_child_failure_is_reported(tmp_path: Path) -> None:
    (tmp_path / "emvos.py").write_text("raise ImportError('broken checkout')\n")
    with pytest.raises(RuntimeError, match="broken checkout"):
        speed.time_official_isolated(tmp_path, 64, (1,), SETTINGS, torch.device("cpu"), tuned=False)


def test_report_shows_the_official_with_the_same_settings_when_timed(summary: dict) -> None:
    official = {**summary["official"], "tuned_seconds_per_frame": {"1": 0.5, "2": 1.0}}
    doc = format_markdown({**summary, "official": official})
    assert "official s/frame, same settings | fp32 over that |" in doc
    as_it_is = {k: v for k, v in summary["official"].items() if k != "tuned_seconds_per_frame"}
    assert "official s/frame, same settings" not in format_markdown({**summary, "official": as_it_is})


def test_reports(summary: dict) -> None:
    text = format_text(summary)
    assert "Measured peak" in text and "Speed: tiny paper" in text and "official" in text
    doc = format_markdown(summary)
    assert "```bash\nemvos speed --test\n```" in doc
    assert "| 64p | 2 | fp32 |" in doc and "## Video length" in doc and "## Targets" in doc


def test_the_issue_reference_is_quoted_without_the_official_code(summary: dict) -> None:
    at_480 = {**summary, "official": None, "settings": {**summary["settings"], "resolutions": [480]},
              "cells": [{**c, "resolution": 480} for c in summary["cells"]]}
    doc = format_markdown(at_480)
    assert "reference timings, not this run" in doc and "| 1 | 0.910 |" in doc
    assert "official" not in format_text({**summary, "official": None}).lower()


def test_a_gpu_run_is_held_to_the_gpu_target_and_says_how_it_computed_fp32(summary: dict) -> None:
    at_480 = [{**c, "resolution": 480} for c in summary["cells"]]
    gpu = {**summary, "machine": {**summary["machine"], "device": "cuda:0", "gpu": "Some GPU",
                                  "cudnn_allow_tf32": True, "matmul_allow_tf32": False}, "cells": at_480}
    rows = targets(gpu)
    assert [r[0] for r in rows if "official" in r[0]] == []  # the speed-up targets are the CPU's
    assert any(r[0].startswith("paper model >= 300 fps, 480p, 1 object (Some GPU)") for r in rows)
    doc = format_markdown(gpu)
    assert "convolutions in TF32" in doc and "matrix products in fp32" in doc
    assert any("official" in r[0] for r in targets(summary))  # a CPU run still is


def test_model_time_goes_in_whole_chunks_of_the_lookahead() -> None:
    torch.manual_seed(0)
    predictor = VideoPredictor(EMVOS(TINY, encoder_weights=None), device="cpu", resolution=0, lookahead=3)
    timing = time_model(predictor, SyntheticVideo((48, 80), discs=1), 1,
                        replace(SETTINGS, cell_seconds=0.0, min_frames=4, max_frames=4))
    assert timing.frames == 6 and timing.seconds > 0  # 4 frames wanted: two chunks of 3


def test_synthetic_video_is_seeded_and_gives_every_object() -> None:
    video = SyntheticVideo((90, 160), discs=3)
    assert np.array_equal(video.frame(5), SyntheticVideo((90, 160), discs=3).frame(5))
    assert not np.array_equal(video.frame(0), video.frame(5))
    assert video.frame(0).shape == (90, 160, 3) and video.frame(0).dtype == np.uint8
    assert set(np.unique(video.first_mask(2))) == {0, 1, 2}
    assert set(np.unique(video.draw(0)[1])) == {0, 1, 2, 3}


def test_cli_quick_run_writes_json_csv_and_doc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speed, "paper_spec", lambda checkpoint=None: ModelSpec("tiny paper", TINY))
    monkeypatch.setattr(speed, "shipped_spec", lambda checkpoint=None: ModelSpec("tiny shipped", TINY))
    out, doc = tmp_path / "out", tmp_path / "docs" / "performance.md"
    args = ["speed", "--quick", "--modes", "fp32", "--resolutions", "64", "--objects", "1", "--lengths", "2,3",
            "--threads", "1", "--out", str(out), "--doc", str(doc), "--quiet"]
    assert main(args) == 0
    summary = json.loads((out / "speed.json").read_text())
    command = f"emvos speed --out {out} --doc {doc} --quick --modes fp32 --objects 1 --resolutions 64 " \
              "--lengths 2,3 --threads 1 --quiet"
    assert summary["command"] == command and command in doc.read_text()
    assert (out / "speed.csv").read_text().startswith("model,mode,resolution,objects")
    assert not (out / "work").exists()
    assert summary["settings"]["max_frames"] == QUICK.max_frames
    again = tmp_path / "again.md"
    assert main(["speed", "--from-json", str(out / "speed.json"), "--doc", str(again)]) == 0
    assert again.read_text() == doc.read_text()


def test_davis_scores_each_mode_of_a_trained_model(davis2017_sample_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "davis"
    for kind, ext in (("JPEGImages", "jpg"), ("Annotations", "png")):
        (root / kind / "480p" / "girls").mkdir(parents=True)
        for f in sorted((davis2017_sample_root / kind / "480p" / "schoolgirls").glob(f"*.{ext}"))[:3]:
            shutil.copy(f, root / kind / "480p" / "girls" / f.name)
    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny.pt"
    save_checkpoint(checkpoint, EMVOS(TINY, encoder_weights=None))
    settings = replace(SETTINGS, objects=(1,), lengths=())
    summary = SpeedRun(settings, {"shipped": ModelSpec("tiny", None, checkpoint)}, torch.device("cpu"),
                       tmp_path / "out", "emvos speed", davis=DavisSubset(root, 2017, "val", ("girls",))).run()
    rows = {r["mode"]: r for r in summary["davis"]["rows"]}
    assert set(rows) == {"fp32-unopt", "fp32"} and all(0 <= r["J&F-Mean"] <= 1 for r in rows.values())
    assert summary["lengths"] is None and "DAVIS 2017 J&F" in format_markdown(summary)


@pytest.mark.parametrize("extra", [
    ["--modes", "fp64"],
    ["--modes", "fp16", "--device", "cpu"],
    ["--objects", "0"],
    ["--objects", "two"],
    ["--resolutions", "101"],
    ["--models", "huge"],
    ["--official-repo", "no-such-checkout"],
    ["--official-repo", ".", "--models", "shipped"],
    ["--year", "2016"],
    ["--davis-root", "no-such-davis"],
    ["--min-frames", "5", "--max-frames", "2"],
    ["--paper-checkpoint", "missing.pt"],
    ["--from-json", "missing.json"],
    ["--from-json", "emvos.py"],
    ["--from-json", "bad.json"],
    ["--official-repo", "broken"],
])
def test_cli_errors_are_one_line(extra: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "emvos.py").write_text(FAKE_OFFICIAL)
    (tmp_path / "bad.json").write_text('{"cells": 3}')
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "emvos.py").write_text("import no_such_module_anywhere\n")
    extra = [str(tmp_path / a) if a in ("emvos.py", "bad.json", "broken") else a for a in extra]
    extra = [str(tmp_path) if a == "." else a for a in extra]
    assert main(["speed", "--out", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("emvos: error: ") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
