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


def test_adapt_ablation_scores_a_setting(davis2017_sample_root: Path, tmp_path: Path) -> None:
    import json
    import shutil

    root = tmp_path / "davis"
    for kind, ext in (("JPEGImages", "jpg"), ("Annotations", "png")):
        dst = root / kind / "480p" / "girls"
        dst.mkdir(parents=True)
        for i, f in enumerate(sorted((davis2017_sample_root / kind / "480p" / "schoolgirls").glob(f"*.{ext}"))[:4]):
            shutil.copy(f, dst / f"{i:05d}.{ext}")
    out = _run("adapt_ablation.py", "--settings", '{"steps": 2, "variants": 2, "scale": [0.9, 1.1]}',
               "--davis-root", str(root), "--year", "2017", "--sequences", "girls", "--resolution", "96",
               "--threads", "1", "--out", str(tmp_path / "out"))
    assert "J&F-Mean" in out
    record = json.loads((tmp_path / "out" / "adapt.json").read_text())
    assert record["settings"]["steps"] == 2 and record["settings"]["scale"] == [0.9, 1.1]
    assert record["sequences"][0]["frames"] == 4 and record["sequences"][0]["objects"] == 7
    assert len(list((tmp_path / "out" / "girls").glob("*.png"))) == 4


def test_adapt_cost_times_both_encoders(davis2016_root: Path) -> None:
    first = davis2016_root / "JPEGImages" / "480p" / "bear" / "00000.jpg"
    out = _run("adapt_cost.py", "--frame", str(first), "--mask", str(davis2016_root / "Annotations" / "480p" / "bear"
                                                                     / "00000.png"),
               "--shorter-side", "64", "--steps", "2", "--rounds", "1")
    assert "reference" in out and "prepared" in out and "2 steps" in out


def test_crowd_objects_counts_the_kept_objects(davis2016_root: Path, tmp_path: Path) -> None:
    import json

    from emvos.data.crowd import write_crowd_benchmark

    write_crowd_benchmark(tmp_path / "crowd", source=davis2016_root, sequences=["bear", "boat"], videos=1, objects=4,
                          length=5, size=(96, 160), seed=0, area=(150.0, 600.0))
    out = _run("crowd_objects.py", "--root", str(tmp_path / "crowd"), "--out", str(tmp_path / "out"), "--adapt", "2",
               "--resolution", "64", "--frames", "1,4", "--threads", "1")
    assert "kept  present  hidden" in out
    report = json.loads((tmp_path / "out" / "crowd-objects.json").read_text())
    counts = report["sequences"]["crowd-0000"]["counts"]
    assert set(counts) == {"1", "4"} and all(0 <= c["kept"] <= c["present"] <= 4 for c in counts.values())
    # Every visible object not kept is lost to someone: the background, a copy of itself or another object.
    assert all(sum(c["lost_to"].values()) == 4 - c["kept"] - c["hidden"] for c in counts.values())


def test_a_lost_object_is_lost_to_whoever_else_holds_most_of_it() -> None:
    import runpy

    import numpy as np

    lost_to = runpy.run_path(str(SCRIPTS / "crowd_objects.py"))["lost_to"]
    truth = np.zeros((4, 4), dtype=np.uint8)
    truth[:3] = 5  # object 5: 12 pixels, a higher id than any predicted one
    predicted = np.zeros((4, 4), dtype=np.uint8)
    predicted[:2] = 2  # 8 of them went to object 2, 4 to the background
    assert lost_to(truth, predicted, 5, {2: "dog", 5: "dog"}) == "copy"
    assert lost_to(truth, predicted, 5, {2: "car", 5: "dog"}) == "other"
    assert lost_to(truth, predicted, 5, None) == "other"
    predicted[:2] = 0
    assert lost_to(truth, predicted, 5, None) == "background"


def test_reentry_pans_the_target_out_of_view_and_back(tmp_path: Path) -> None:
    import json

    import numpy as np
    from PIL import Image

    from emvos.io.masks import write_label_png

    root, length = tmp_path / "davis", 30
    rng = np.random.default_rng(0)
    for name, width in (("square", 16), ("wide", 130)):  # "wide" cannot leave a 0.4-wide window: skipped
        images, masks = root / "JPEGImages" / "480p" / name, root / "Annotations" / "480p" / name
        images.mkdir(parents=True)
        masks.mkdir(parents=True)
        for t in range(length):  # a bright box drifting slowly near the left edge of a noisy 64x160 frame
            frame = rng.integers(0, 80, (64, 160, 3), dtype=np.uint8)
            labels = np.zeros((64, 160), np.uint8)
            labels[24:40, 20 + t // 3:20 + width + t // 3] = 1
            frame[labels == 1] = (230, 60, 40)
            Image.fromarray(frame).save(images / f"{t:05d}.jpg")
            write_label_png(masks / f"{t:05d}.png", labels)
    out = _run("reentry.py", "--source", str(root), "--sequences", "square,wide", "--out", str(tmp_path / "out"),
               "--adapt", "0", "--resolution", "64", "--start", "3", "--hold", "6", "--threads", "1")
    assert "wide             skipped" in out, out
    report = json.loads((tmp_path / "out" / "reentry.json").read_text())
    assert set(report["sequences"]) == {"square"}
    row = report["sequences"]["square"]
    visible = [area > 0 for area in row["true_area"]]
    assert len(visible) == length - 1 and visible[0] and visible[-1]
    assert visible[12:18] == [False] * 6, visible  # out of view while the window is away (frames 13..18)
    assert 0.0 <= row["ghost"] <= 1.0 and 0.0 <= row["after"] <= 1.0


def test_inference_paths_times_each_variant_and_writes_its_page(davis2016_root: Path, tmp_path: Path) -> None:
    doc = tmp_path / "paths.md"
    out = _run("inference_paths.py", "--root", str(davis2016_root), "--resolution", "64", "--frames", "2",
               "--rounds", "1", "--threads", "1", "--doc", str(doc))
    for variant in ("| reference | ", "| prepared | "):
        assert variant in out
    assert "| reference | " in doc.read_text() and "python benchmarks/inference_paths.py --root" in doc.read_text()


def test_reach_cost_times_each_object_count() -> None:
    out = _run("reach_cost.py", "--grid", "4x6", "--objects", "1,3", "--threads", "1")
    assert "1 object(s): " in out and "3 object(s): " in out and out.count("ms per frame") == 2
