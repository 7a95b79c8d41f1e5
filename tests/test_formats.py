"""Result formats: each writer's files read back (``emvos.io.formats.read_results``) to the same masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emvos.io.formats import FORMATS, read_results, result_writer

H, W = 40, 56


def _frames() -> list[tuple[str, np.ndarray, tuple[int, ...], np.ndarray]]:
    """Three frames of two blob objects (ids 2 and 7), one frame where object 7 is gone."""
    rows, cols = np.ogrid[:H, :W]
    result = []
    for step in range(3):
        labels = np.zeros((H, W), np.uint8)
        labels[((rows - 20) / 9.0) ** 2 + ((cols - 15 - step) / 11.0) ** 2 <= 1] = 2
        if step < 2:
            labels[6:18, 36:50] = 7
        probabilities = np.stack([np.where(labels == i, 230, 10).astype(np.uint8) for i in (2, 7)])
        result.append((f"{step:05d}", labels, (2, 7), probabilities))
    return result


@pytest.mark.parametrize("format", [f for f in FORMATS if f != "palette"])
def test_each_format_round_trips(format: str, tmp_path: Path) -> None:
    frames = _frames()
    with result_writer(format, tmp_path) as writer:
        for name, labels, ids, probabilities in frames:
            writer.write(name, labels, ids, probabilities)
    back = read_results(format, tmp_path, size=(H, W))
    assert sorted(back) == [name for name, *_ in frames]
    for name, labels, *_ in frames:
        if format == "yolo":  # polygons through the outer pixels' centres: the boundary within a pixel
            for object_id in (2, 7):
                truth, read = labels == object_id, back[name] == object_id
                assert (truth & read).sum() / max(1, (truth | read).sum()) > 0.9 or not truth.any()
        else:
            np.testing.assert_array_equal(back[name], labels)


def test_coco_json_is_coco(tmp_path: Path) -> None:
    with result_writer("coco", tmp_path) as writer:
        for name, labels, ids, probabilities in _frames():
            writer.write(name, labels, ids, probabilities)
    document = json.loads((tmp_path / "annotations.json").read_text())
    assert [c["id"] for c in document["categories"]] == [2, 7]
    assert len(document["images"]) == 3 and len(document["annotations"]) == 5
    first = document["annotations"][0]
    assert first["segmentation"]["size"] == [H, W] and isinstance(first["segmentation"]["counts"], str)
    assert first["area"] == int((_frames()[0][1] == 2).sum())


def test_soft_formats_keep_the_probabilities(tmp_path: Path) -> None:
    frames = _frames()
    with result_writer("npz", tmp_path / "npz") as writer, result_writer("soft", tmp_path / "soft") as soft:
        for name, labels, ids, probabilities in frames:
            writer.write(name, labels, ids, probabilities)
            soft.write(name, labels, ids, probabilities)
    with np.load(tmp_path / "npz" / "00000.npz") as data:
        np.testing.assert_array_equal(data["probabilities"], frames[0][3])
        assert data["object_ids"].tolist() == [2, 7]
    from PIL import Image

    np.testing.assert_array_equal(np.array(Image.open(tmp_path / "soft" / "7" / "00001.png")), frames[1][3][1])
