"""``emvos batch``: manifests, records and summary, failures, re-runs, shards, and Ray workers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emvos.batch.manifest import read_manifest
from emvos.batch.runner import RECORD, SUMMARY
from emvos.cli import main
from emvos.errors import EmvosInputError

H, W = 32, 48


def _video(folder: Path, name: str, frames: int = 3, mask_size: tuple[int, int] = (H, W)) -> None:
    """Frames ``folder/name/`` and the first frame's mask ``folder/name.png``."""
    rng = np.random.default_rng(len(name))
    (folder / name).mkdir(parents=True)
    for i in range(frames):
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(folder / name / f"{i:05d}.png")
    mask = np.zeros(mask_size, np.uint8)
    mask[4:20, 4:30] = 1
    Image.fromarray(mask).save(folder / f"{name}.png")


def _batch(manifest: Path, out: Path, checkpoint: Path, *extra: str) -> int:
    return main(["batch", str(manifest), "--out", str(out), "--checkpoint", str(checkpoint), "--resolution", "0",
                 "--threads", "1", "--quiet", *extra])


def _summary(out: Path) -> dict[str, dict[str, str]]:
    with (out / SUMMARY).open(newline="") as f:
        return {row["video"]: row for row in csv.DictReader(f)}


def test_a_failing_video_is_recorded_and_the_others_go_on(tmp_path: Path, tiny_checkpoint: Path) -> None:
    videos = tmp_path / "videos"
    _video(videos, "a")
    _video(videos, "b", mask_size=(H + 1, W))  # a mask of the wrong size
    _video(videos, "c", frames=4)
    out = tmp_path / "out"
    assert _batch(videos, out, tiny_checkpoint) == 1
    summary = _summary(out)
    assert [summary[v]["status"] for v in "abc"] == ["done", "failed", "done"]
    assert summary["c"]["frames"] == "4" and summary["c"]["objects"] == "1" and float(summary["c"]["fps"]) > 0
    assert "b.png" in summary["b"]["error"]
    assert sorted(p.name for p in (out / "c").glob("*.png")) == [f"{i:05d}.png" for i in range(4)]


def test_a_rerun_skips_finished_videos_and_retries_failed_ones(tmp_path: Path, tiny_checkpoint: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    videos = tmp_path / "videos"
    _video(videos, "a")
    _video(videos, "b", mask_size=(H + 1, W))
    out = tmp_path / "out"
    assert _batch(videos, out, tiny_checkpoint) == 1
    record = (out / "a" / RECORD).read_text()
    (out / "a" / "00000.png").unlink()  # a skipped video is not written again
    _video(tmp_path / "fixed", "b")
    (videos / "b.png").write_bytes((tmp_path / "fixed" / "b.png").read_bytes())
    capsys.readouterr()
    assert _batch(videos, out, tiny_checkpoint) == 0
    assert "1 already done, 1 to do" in capsys.readouterr().out
    assert (out / "a" / RECORD).read_text() == record and not (out / "a" / "00000.png").exists()
    assert _summary(out)["b"]["status"] == "done"


def test_csv_manifest_with_names_and_shards(tmp_path: Path, tiny_checkpoint: Path) -> None:
    videos = tmp_path / "videos"
    for name in ("a", "b", "c"):
        _video(videos, name)
    manifest = tmp_path / "list.csv"
    manifest.write_text("video,mask,name\nvideos/a,videos/a.png,first\nvideos/b,videos/b.png,\n"
                        "videos/c,videos/c.png,third\n")
    out = tmp_path / "out"
    assert _batch(manifest, out, tiny_checkpoint, "--shard", "1/2") == 0
    summary = _summary(out)
    assert [(v, summary[v]["status"]) for v in summary] == [("first", "pending"), ("b", "done"),
                                                            ("third", "pending")]
    assert _batch(manifest, out, tiny_checkpoint, "--shard", "0/2") == 0
    assert {row["status"] for row in _summary(out).values()} == {"done"}


@pytest.mark.parametrize(("text", "message"), [
    ("video\nvideos/a\n", "no column mask"),
    ("video,mask\nvideos/a,videos/absent.png\n", "line 2: mask"),
    ("video,mask\nvideos/a,videos/a.png\nvideos/a,videos/a.png\n", "distinct names"),
    ("video,mask\n", "lists no videos"),
])
def test_bad_manifests_are_refused_before_any_work(tmp_path: Path, tiny_checkpoint: Path,
                                                   capsys: pytest.CaptureFixture[str], text: str, message: str) -> None:
    _video(tmp_path / "videos", "a")
    (tmp_path / "list.csv").write_text(text)
    with pytest.raises(EmvosInputError, match=message):
        read_manifest(tmp_path / "list.csv")
    assert _batch(tmp_path / "list.csv", tmp_path / "out", tiny_checkpoint) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_video_without_a_mask_beside_it_is_refused(tmp_path: Path) -> None:
    _video(tmp_path / "videos", "a")
    (tmp_path / "videos" / "a.png").unlink()
    with pytest.raises(EmvosInputError, match="no mask beside it"):
        read_manifest(tmp_path / "videos")


def test_workers_need_ray(tmp_path: Path, tiny_checkpoint: Path) -> None:
    _video(tmp_path / "videos", "a")
    assert _batch(tmp_path / "videos", tmp_path / "out", tiny_checkpoint, "--workers", "2") == 2


@pytest.mark.slow
def test_ray_workers_on_a_local_instance(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """Two Ray workers, each with its predictor (onnxruntime: the workers need neither PyTorch nor
    the test encoder), on a local Ray instance."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'emvos[ray]')")
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    from emvos.onnx.export import export_onnx

    onnx_dir = export_onnx(tmp_path / "onnx", tiny_checkpoint)
    videos = tmp_path / "videos"
    for name in ("a", "b", "c"):
        _video(videos, name)
    out = tmp_path / "out"
    rc = main(["batch", str(videos), "--out", str(out), "--backend", "onnxruntime", "--onnx", str(onnx_dir),
               "--resolution", "0", "--quiet", "--ray", "--workers", "2"])
    assert rc == 0
    assert {row["status"] for row in _summary(out).values()} == {"done"}
    for name in "abc":
        assert json.loads((out / name / RECORD).read_text())["frames"] == 3
        assert len(list((out / name).glob("*.png"))) == 3
