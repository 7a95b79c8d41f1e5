"""Tests for the training datasets of emvos.data on tiny synthetic folders (and a few real sequences).

Synthetic frames paint each object a unique colour (object 1 red, object 2 green) on a blue
background whose brightness encodes the frame number, so every transform can be checked from the
output alone: masks must cover exactly the pixels of the chosen object's colour, and the frame
numbers must run consecutively.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from emvos.data import (
    MAX_DRAWS,
    VIRTUAL_LENGTH,
    DavisClips,
    SampleSkipped,
    StaticPseudoVideos,
    YTVOSClips,
    coco_instances,
    image_folder_pairs,
)
from emvos.data.base import JOINT_MIN_PIXELS, read_labels
from emvos.data.static import yolo_instances
from emvos.data.transforms import (
    balanced_crop,
    crop_image,
    flip,
    sequential_affine,
    warp_image,
)
from emvos.errors import EmvosInputError
from emvos.io import DAVIS_PALETTE

HEIGHT, WIDTH = 120, 160
COLOURS = {1: (230, 20, 20), 2: (20, 230, 20)}
SIZE = 64


def frame_labels(t: int, objects: tuple[int, ...] = (1, 2)) -> np.ndarray:
    """``(H, W) uint8`` ids of synthetic frame ``t``: object 1 moves right, object 2 moves left."""
    labels = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    if 1 in objects:
        labels[30:80, 20 + 3 * t : 70 + 3 * t] = 1
    if 2 in objects:
        labels[60:105, 105 - 2 * t : 145 - 2 * t] = 2
    return labels


def frame_pixels(t: int, labels: np.ndarray) -> np.ndarray:
    """``(H, W, 3) uint8`` RGB: blue background of brightness ``40 + 12 t``, objects in their colour."""
    pixels = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    pixels[...] = (20, 20, 40 + 12 * t)
    for object_id, colour in COLOURS.items():
        pixels[labels == object_id] = colour
    return pixels


def save_mask(path: Path, labels: np.ndarray, binary: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if binary:
        Image.fromarray(np.where(labels == 1, 255, 0).astype(np.uint8), "L").save(path)
    else:
        image = Image.fromarray(labels, "P")
        image.putpalette(DAVIS_PALETTE)
        image.save(path)


def save_frame(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=98)


def make_davis(root: Path, year: int, sequences: dict[str, int]) -> Path:
    """A DAVIS-layout folder; 2016 masks hold object 1 only (0/255), 2017 masks objects 1 and 2."""
    for name, count in sequences.items():
        for t in range(count):
            labels = frame_labels(t, (1,) if year == 2016 else (1, 2))
            save_frame(root / "JPEGImages" / "480p" / name / f"{t:05d}.jpg", frame_pixels(t, labels))
            save_mask(root / "Annotations" / "480p" / name / f"{t:05d}.png", labels, binary=year == 2016)
    split = root / "ImageSets" / str(year) / "train.txt"
    split.parent.mkdir(parents=True, exist_ok=True)
    split.write_text("".join(f"{name}\n" for name in sequences))
    return root


def make_ytvos(root: Path, videos: dict[str, list[tuple[int, ...]]], meta: bool = True) -> Path:
    """A YouTube-VOS-layout folder: annotated frames 00000, 00005, ...; ``videos[v][i]`` = objects of frame i."""
    meta_videos = {}
    for name, frames in videos.items():
        objects: dict[str, dict[str, list[str]]] = {}
        for index, present in enumerate(frames):
            stem = f"{5 * index:05d}"
            labels = frame_labels(index, present)
            save_frame(root / "train" / "JPEGImages" / name / f"{stem}.jpg", frame_pixels(index, labels))
            save_mask(root / "train" / "Annotations" / name / f"{stem}.png", labels)
            for object_id in present:
                objects.setdefault(str(object_id), {"category": "thing", "frames": []})["frames"].append(stem)
        meta_videos[name] = {"objects": objects}
    if meta:
        (root / "train" / "meta.json").write_text(json.dumps({"videos": meta_videos}))
    return root


def check_sample(sample: dict[str, torch.Tensor], length: int, size: int = SIZE) -> None:
    """Contract: shapes, dtypes, value ranges; the target is present in frame 0."""
    frames, masks = sample["frames"], sample["masks"]
    assert frames.shape == (length, 3, size, size) and frames.dtype == torch.float32
    assert masks.shape == (length, size, size) and masks.dtype == torch.int64
    assert 0.0 <= frames.min() and frames.max() <= 1.0
    assert set(masks.unique().tolist()) <= {0, 1}
    assert masks[0].sum() > 0


def near_boundary(mask: np.ndarray, width: int = 2) -> np.ndarray:
    """Pixels within ``width`` pixels (chessboard distance) of a change of ``mask``."""
    padded = np.pad(mask, width, mode="edge")
    band = np.zeros_like(mask, dtype=bool)
    for dy in range(-width, width + 1):
        for dx in range(-width, width + 1):
            shifted = padded[width + dy : width + dy + mask.shape[0], width + dx : width + dx + mask.shape[1]]
            band |= shifted != mask
    return band


def check_mask_follows_colour(sample: dict[str, torch.Tensor]) -> tuple[int, ...]:
    """Masks cover exactly the pixels of one object's colour (away from edges); returns the target."""
    frames = sample["frames"].permute(0, 2, 3, 1).numpy() * 255
    masks = sample["masks"].numpy().astype(bool)
    inside = frames[0][masks[0] & ~near_boundary(masks[0])]
    target = min(COLOURS, key=lambda object_id: np.abs(inside.mean(0) - COLOURS[object_id]).max())
    for frame, mask in zip(frames, masks, strict=True):
        coloured = np.abs(frame - COLOURS[target]).max(axis=-1) < 40
        away = ~near_boundary(mask) & ~near_boundary(coloured)
        assert np.array_equal(mask[away], coloured[away])
        assert mask.sum() == 0 or coloured[mask].mean() > 0.8
    return (target,)


def frame_numbers(sample: dict[str, torch.Tensor]) -> list[int]:
    """The synthetic frame number of each output frame, from the background brightness."""
    numbers = []
    for frame in sample["frames"].permute(0, 2, 3, 1).numpy() * 255:
        background = (frame[..., 0] < 60) & (frame[..., 1] < 60)
        numbers.append(round((float(np.median(frame[background][:, 2])) - 40) / 12))
    return numbers


# ----------------------------------------------------------------------------------------- DAVIS


@pytest.fixture
def davis2017(tmp_path: Path) -> Path:
    return make_davis(tmp_path / "davis", 2017, {"alpha": 6, "beta": 3})


def test_davis_samples_follow_the_contract_and_transforms_keep_frames_and_masks_together(davis2017: Path) -> None:
    dataset = DavisClips(davis2017, clip_length=4, crop_size=SIZE, seed=3)
    assert len(dataset) == VIRTUAL_LENGTH
    targets, directions, flips = set(), set(), set()
    for k in range(24):
        sample = dataset[k]
        check_sample(sample, 4)
        targets.update(check_mask_follows_colour(sample))
        numbers = frame_numbers(sample)
        steps = set(np.diff(numbers).tolist())
        assert steps <= {0, 1} or steps <= {0, -1}, numbers
        if 0 in steps:  # the last frame is repeated only at the end of the sequence
            first_repeat = list(np.diff(numbers)).index(0)
            assert all(step == 0 for step in np.diff(numbers)[first_repeat:])
            assert numbers[-1] in (0, 5, 2)
        directions.add(numbers[-1] - numbers[0] > 0 if numbers[-1] != numbers[0] else None)
        red = sample["frames"][0, 0] > 0.7
        flips.add(bool(red[:, : SIZE // 2].sum() > red[:, SIZE // 2 :].sum()))
    assert targets == {1, 2}  # both objects get picked
    assert {True, False} <= directions  # forward and reversed clips
    assert flips == {True, False}  # red (left of centre in the source) sometimes ends up on the right


def test_samples_are_deterministic_in_seed_and_index(davis2017: Path) -> None:
    first = DavisClips(davis2017, clip_length=3, crop_size=SIZE, seed=5)
    second = DavisClips(davis2017, clip_length=3, crop_size=SIZE, seed=5)
    other_seed = DavisClips(davis2017, clip_length=3, crop_size=SIZE, seed=6)
    for k in (0, 7, 123456789):
        a, b = first[k], second[k]
        assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["masks"], b["masks"])
    samples = [first[k]["frames"] for k in range(6)]
    assert all(not torch.equal(samples[i], samples[j]) for i in range(6) for j in range(i))
    assert not all(torch.equal(first[k]["frames"], other_seed[k]["frames"]) for k in range(4))


def test_dataloader_workers_give_the_same_samples_and_share_skip_counts(tmp_path: Path) -> None:
    root = make_davis(tmp_path / "davis", 2017, {"alpha": 6, "beta": 3})
    (root / "JPEGImages" / "480p" / "beta" / "00001.jpg").write_bytes(b"not a jpeg")
    reference = DavisClips(root, clip_length=3, crop_size=32, seed=1)
    expected = [reference[k] for k in range(8)]
    assert reference.skipped["unreadable"] > 0
    dataset = DavisClips(root, clip_length=3, crop_size=32, seed=1)
    loader = DataLoader(dataset, batch_size=2, num_workers=2, shuffle=False)
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == 4:
            break
    frames = torch.cat([batch["frames"] for batch in batches])
    masks = torch.cat([batch["masks"] for batch in batches])
    assert torch.equal(frames, torch.stack([sample["frames"] for sample in expected]))
    assert torch.equal(masks, torch.stack([sample["masks"] for sample in expected]))
    # Workers may prefetch further samples, which can only add skips.
    assert dataset.skipped["unreadable"] >= reference.skipped["unreadable"]


def test_davis_2016_masks_are_one_object(tmp_path: Path) -> None:
    root = make_davis(tmp_path / "davis", 2016, {"alpha": 4})
    dataset = DavisClips(root, year=2016, clip_length=3, crop_size=SIZE)
    for k in range(6):
        sample = dataset[k]
        check_sample(sample, 3)
        assert check_mask_follows_colour(sample) == (1,)


def test_davis_sequence_lists_and_exclusions(davis2017: Path) -> None:
    only_beta = DavisClips(davis2017, sequences=["beta"], clip_length=2, crop_size=SIZE)
    assert [video.name for video in only_beta.videos] == ["beta"]
    without_alpha = DavisClips(davis2017, exclude=["alpha"], clip_length=2, crop_size=SIZE)
    assert [video.name for video in without_alpha.videos] == ["beta"]
    all_folders = DavisClips(davis2017, split=None, clip_length=2, crop_size=SIZE)
    assert [video.name for video in all_folders.videos] == ["alpha", "beta"]
    with pytest.raises(EmvosInputError, match="no such split file"):
        DavisClips(davis2017, split="val")
    with pytest.raises(EmvosInputError, match="no usable sequence"):
        DavisClips(davis2017, exclude=["alpha", "beta"])


def test_davis_bad_data_is_skipped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_davis(tmp_path / "davis", 2017, {"good": 4, "corrupt": 4, "nomasks": 3, "mismatch": 3})
    (root / "JPEGImages" / "480p" / "corrupt" / "00002.jpg").write_bytes(b"\xff\xd8\xff garbage")
    for path in (root / "Annotations" / "480p" / "nomasks").iterdir():
        path.unlink()
    (root / "Annotations" / "480p" / "nomasks").rmdir()
    save_mask(root / "Annotations" / "480p" / "mismatch" / "00001.png", np.ones((10, 10), np.uint8))
    (root / "Annotations" / "480p" / "good" / "00003.png").unlink()
    with open(root / "ImageSets" / "2017" / "train.txt", "a") as split:
        split.write("ghost\n")
    with caplog.at_level(logging.WARNING, logger="emvos.data"):
        dataset = DavisClips(root, clip_length=4, crop_size=32)
    assert dataset.excluded == {"missing_folder": 2, "no_annotated_frame": 0, "unannotated_frame": 1}
    assert "missing_folder=2" in caplog.text and "unannotated_frame=1" in caplog.text
    with caplog.at_level(logging.WARNING, logger="emvos.data"):
        for k in range(30):
            check_sample(dataset[k], 4, 32)
    assert dataset.skipped["unreadable"] > 0 and dataset.skipped["size_mismatch"] > 0
    assert "corrupt/00002.jpg" in caplog.text and "mismatch/00001.jpg" in caplog.text


def test_nothing_usable_raises(tmp_path: Path) -> None:
    root = make_davis(tmp_path / "davis", 2017, {"alpha": 2})
    with pytest.raises(EmvosInputError, match="no such folder"):
        DavisClips(tmp_path / "nowhere")
    for path in (root / "JPEGImages" / "480p" / "alpha").iterdir():
        path.write_bytes(b"broken")
    dataset = DavisClips(root, clip_length=2, crop_size=16)
    with pytest.raises(EmvosInputError, match=f"{MAX_DRAWS} draws in a row"):
        dataset[0]
    assert dataset.skipped["unreadable"] == MAX_DRAWS


# ----------------------------------------------------------------------------------- YouTube-VOS


def test_ytvos_clips_start_where_meta_lists_objects(tmp_path: Path) -> None:
    root = make_ytvos(
        tmp_path / "ytvos",
        {
            "v1": [(1,), (1,), (1, 2), (1, 2), (2,)],
            "v2": [(), (), (1,), (1,)],  # objects appear at the third annotated frame
        },
    )
    dataset = YTVOSClips(root, clip_length=3, crop_size=SIZE, seed=2)
    assert dataset.excluded == {"missing_folder": 0, "no_annotated_frame": 0, "unannotated_frame": 0, "no_object": 0}
    assert dataset.videos[1].has_object == (False, False, True, True)
    for k in range(20):
        sample = dataset[k]
        check_sample(sample, 3)
        check_mask_follows_colour(sample)
        numbers = frame_numbers(sample)
        assert set(np.diff(numbers).tolist()) <= {0, 1} or set(np.diff(numbers).tolist()) <= {0, -1}
    assert dataset.skipped["no_object"] == 0


def test_ytvos_without_meta_resamples_empty_first_frames(tmp_path: Path) -> None:
    root = make_ytvos(tmp_path / "ytvos", {"v2": [(), (), (1,), (1,)]}, meta=False)
    (root / "train" / "JPEGImages" / "v2" / "00020.jpg").write_bytes(b"")  # one more frame, unannotated
    dataset = YTVOSClips(root, clip_length=2, crop_size=SIZE)
    assert dataset.excluded["unannotated_frame"] == 1
    for k in range(10):
        check_sample(dataset[k], 2)
    assert dataset.skipped["no_object"] > 0


def test_ytvos_bad_meta_and_missing_folders(tmp_path: Path) -> None:
    root = make_ytvos(tmp_path / "ytvos", {"v1": [(1,), (1,)]})
    with pytest.raises(EmvosInputError, match="train/JPEGImages"):
        YTVOSClips(tmp_path)
    (root / "train" / "JPEGImages" / "v3").mkdir()
    dataset = YTVOSClips(root, clip_length=2, crop_size=SIZE)
    assert dataset.excluded["missing_folder"] == 1
    (root / "train" / "meta.json").write_text("{}")
    with pytest.raises(EmvosInputError, match="meta.json"):
        YTVOSClips(root)


# --------------------------------------------------------------------------- Static pseudo-videos


def make_static(root: Path) -> tuple[Path, Path]:
    for group in ("a", "b"):
        for t in range(2):
            labels = frame_labels(t + (3 if group == "b" else 0))
            save_frame(root / "images" / group / f"{t}.jpg", frame_pixels(t, labels))
            save_mask(root / "masks" / group / f"{t}.png", labels)
    return root / "images", root / "masks"


def test_static_pseudo_videos_are_the_source_then_cumulative_warps(tmp_path: Path) -> None:
    images, masks = make_static(tmp_path)
    source = image_folder_pairs(images, masks)
    assert len(source.items) == 4 and source.excluded == {"missing_mask": 0}
    dataset = StaticPseudoVideos(source, crop_size=SIZE, seed=9)
    for k in range(6):
        sample = dataset[k]
        check_sample(sample, 5)
        check_mask_follows_colour(sample)
        # Replay the documented draw order: image, affine steps, flips, balanced crop on frame 0.
        rng = np.random.default_rng([9, k])
        item = source.items[int(rng.integers(4))]
        image, labels = item.load()
        matrices = sequential_affine(rng, 5, HEIGHT, WIDTH)
        horizontal, vertical = rng.random() < 0.5, rng.random() < 0.5
        box, _ = balanced_crop(labels, rng, SIZE)
        for t in range(5):
            warped = image if t == 0 else warp_image(image, matrices[t])
            expected = flip(crop_image(warped, box, SIZE), horizontal, vertical)
            assert torch.equal(sample["frames"][t], torch.from_numpy(expected.transpose(2, 0, 1).copy()) / 255.0)
        assert not torch.equal(sample["frames"][4], sample["frames"][3])
        assert not torch.equal(sample["masks"][4], sample["masks"][0])


def test_static_without_motion_repeats_the_source(tmp_path: Path) -> None:
    dataset = StaticPseudoVideos(
        image_folder_pairs(*make_static(tmp_path)), crop_size=SIZE, degrees=0, scale=(1, 1), shear=0
    )
    sample = dataset[0]
    assert all(torch.equal(sample["frames"][t], sample["frames"][0]) for t in range(5))
    assert all(torch.equal(sample["masks"][t], sample["masks"][0]) for t in range(5))


def test_joint_static_clips_track_the_target_and_the_other_objects_of_frame_0(tmp_path: Path) -> None:
    source = image_folder_pairs(*make_static(tmp_path))
    single = StaticPseudoVideos(source, crop_size=SIZE, seed=3, degrees=0, scale=(1, 1), shear=0)
    joint = StaticPseudoVideos(source, crop_size=SIZE, seed=3, degrees=0, scale=(1, 1), shear=0, joint=True)
    capped = StaticPseudoVideos(source, crop_size=SIZE, seed=3, degrees=0, scale=(1, 1), shear=0, joint=True,
                                joint_objects=1)
    several = 0
    for k in range(8):
        one, both, first = single[k], joint[k], capped[k]
        assert torch.equal(both["frames"], one["frames"])  # the same draws up to the objects kept
        assert torch.equal(both["masks"] == 1, one["masks"] == 1)  # the target is id 1
        assert torch.equal(first["masks"], one["masks"])
        kept = torch.unique(both["masks"]).tolist()
        assert kept == list(range(len(kept)))  # ids 0..K
        counts = torch.bincount(both["masks"][0].flatten(), minlength=3)
        assert all(int(c) >= JOINT_MIN_PIXELS for c in counts[2:])
        several += len(kept) == 3
    assert several > 0


def test_joint_objects_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="joint_objects"):
        StaticPseudoVideos(image_folder_pairs(*make_static(tmp_path)), joint=True, joint_objects=0)


def test_image_folder_pairs_filters_sequences_and_counts_missing_masks(tmp_path: Path) -> None:
    images, masks = make_static(tmp_path)
    (masks / "b" / "1.png").unlink()
    assert [item.name for item in image_folder_pairs(images, masks, sequences=["a"]).items] == [
        str(images / "a" / "0.jpg"),
        str(images / "a" / "1.jpg"),
    ]
    without_a = image_folder_pairs(images, masks, exclude=["a"])
    assert len(without_a.items) == 1 and without_a.excluded == {"missing_mask": 1}
    with pytest.raises(EmvosInputError, match="no such image folder"):
        image_folder_pairs(tmp_path / "nowhere", masks)
    with pytest.raises(EmvosInputError, match="no usable image"):
        StaticPseudoVideos(image_folder_pairs(images, masks, sequences=["c"]))


def test_static_bad_images_are_skipped_and_counted(tmp_path: Path) -> None:
    images, masks = make_static(tmp_path)
    (images / "a" / "0.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    save_mask(masks / "a" / "1.png", np.zeros((HEIGHT, WIDTH), np.uint8))
    dataset = StaticPseudoVideos(image_folder_pairs(images, masks), clip_length=2, crop_size=32)
    for k in range(12):
        check_sample(dataset[k], 2, 32)
    assert dataset.skipped["unreadable"] > 0 and dataset.skipped["empty_mask"] > 0


def test_coco_instances(tmp_path: Path) -> None:
    pytest.importorskip("pycocotools")
    labels = frame_labels(0)
    save_frame(tmp_path / "images" / "one.jpg", frame_pixels(0, labels))
    save_frame(tmp_path / "images" / "crowd.jpg", frame_pixels(1, labels))
    ys, xs = np.nonzero(labels == 2)
    polygon = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.min())]
    polygon += [float(xs.max() + 1), float(ys.max() + 1), float(xs.min()), float(ys.max() + 1)]
    counts, previous, run = [], 0, 0
    for value in (labels == 1).ravel(order="F"):  # uncompressed RLE, column-major, from zeros
        if value != previous:
            counts.append(run)
            previous, run = value, 0
        run += 1
    counts.append(run)
    data = {
        "images": [
            {"id": 1, "file_name": "one.jpg", "height": HEIGHT, "width": WIDTH},
            {"id": 2, "file_name": "crowd.jpg", "height": HEIGHT, "width": WIDTH},
            {"id": 3, "file_name": "missing.jpg", "height": HEIGHT, "width": WIDTH},
        ],
        "annotations": [
            {"image_id": 1, "iscrowd": 0, "area": 2500, "segmentation": {"size": [HEIGHT, WIDTH], "counts": counts}},
            {"image_id": 1, "iscrowd": 0, "area": 1800, "segmentation": [polygon]},
            {"image_id": 2, "iscrowd": 1, "area": 10, "segmentation": [polygon]},
            {"image_id": 3, "iscrowd": 0, "area": 10, "segmentation": [polygon]},
        ],
    }
    (tmp_path / "instances.json").write_text(json.dumps(data))
    source = coco_instances(tmp_path / "instances.json", tmp_path / "images")
    assert len(source.items) == 1 and source.excluded == {"no_object": 1, "missing_image": 1}
    image, decoded = source.items[0].load()
    assert np.array_equal(decoded, labels)
    dataset = StaticPseudoVideos(source, crop_size=SIZE)
    for k in range(4):
        check_sample(dataset[k], 5)
        check_mask_follows_colour(dataset[k])


def yolo_line(cls: int, mask: np.ndarray) -> str:
    """The YOLO polygon line of a rectangular ``mask`` (its outer pixel edges, normalised)."""
    ys, xs = np.nonzero(mask)
    corners = [(xs.min(), ys.min()), (xs.max() + 1, ys.min()), (xs.max() + 1, ys.max() + 1), (xs.min(), ys.max() + 1)]
    return f"{cls} " + " ".join(f"{x / WIDTH:.6f} {y / HEIGHT:.6f}" for x, y in corners)


def test_yolo_instances_are_rasterised_largest_first(tmp_path: Path) -> None:
    labels = frame_labels(0)
    save_frame(tmp_path / "images" / "one.jpg", frame_pixels(0, labels))
    save_frame(tmp_path / "images" / "unlabelled.jpg", frame_pixels(1, labels))
    (tmp_path / "labels").mkdir()
    # The smaller object first in the file: ids follow the area, largest first.
    (tmp_path / "labels" / "one.txt").write_text(f"{yolo_line(7, labels == 2)}\n{yolo_line(0, labels == 1)}\n")
    source = yolo_instances(tmp_path / "images", tmp_path / "labels")
    assert len(source.items) == 1 and source.excluded == {"no_labels": 1}
    _, decoded = source.items[0].load()
    # Polygons through the outer pixel edges cover the objects up to a pixel at their borders.
    for object_id in (1, 2):
        assert (decoded == object_id)[labels == object_id].mean() > 0.9
        assert (labels == object_id)[decoded == object_id].mean() > 0.9
    dataset = StaticPseudoVideos(source, crop_size=SIZE)
    for k in range(4):
        check_sample(dataset[k], 5)
        check_mask_follows_colour(dataset[k])


def test_unreadable_yolo_labels_are_skipped(tmp_path: Path) -> None:
    save_frame(tmp_path / "images" / "one.jpg", frame_pixels(0, frame_labels(0)))
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "one.txt").write_text("3 0.1 0.2 0.3\n")
    item = yolo_instances(tmp_path / "images", tmp_path / "labels").items[0]
    with pytest.raises(SampleSkipped, match="one.txt:1"):
        item.load()


def test_coco_without_pycocotools_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "pycocotools", None)
    monkeypatch.setitem(__import__("sys").modules, "pycocotools.mask", None)
    with pytest.raises(EmvosInputError, match="pip install pycocotools"):
        coco_instances(tmp_path / "instances.json", tmp_path)


# ------------------------------------------------------------------------------------- Real data


def test_real_davis_2016_clip(davis2016_root: Path) -> None:
    dataset = DavisClips(davis2016_root, year=2016, sequences=["bear", "boat"])
    sample = dataset[0]
    check_sample(sample, 10, 384)


def test_real_davis_2017_clip(davis2017_sample_root: Path) -> None:
    dataset = DavisClips(davis2017_sample_root, year=2017, clip_length=4, crop_size=128)
    for k in range(3):
        check_sample(dataset[k], 4, 128)


def test_real_coco128_pseudo_video(coco128_root: Path) -> None:
    source = yolo_instances(coco128_root / "images" / "train2017", coco128_root / "labels" / "train2017")
    assert len(source.items) >= 120
    check_sample(StaticPseudoVideos(source, crop_size=SIZE)[0], 5)
    joint = StaticPseudoVideos(source, crop_size=128, joint=True, joint_objects=4)
    objects = [int(joint[k]["masks"][0].amax()) for k in range(8)]
    assert max(objects) > 1 and max(objects) <= 4  # people among people: several objects per clip


def test_real_static_pseudo_video(davis2016_root: Path) -> None:
    source = image_folder_pairs(
        davis2016_root / "JPEGImages" / "480p", davis2016_root / "Annotations" / "480p", sequences=["bear"]
    )
    assert len(source.items) == len(list((davis2016_root / "JPEGImages" / "480p" / "bear").iterdir()))
    sample = StaticPseudoVideos(source, crop_size=192)[0]
    check_sample(sample, 5, 192)


def test_training_reads_opaque_greyscale_alpha_masks_as_the_evaluation_does(tmp_path: Path) -> None:
    """DAVIS-2016 ships an LA-mode annotation with an opaque alpha band: one object, not a skipped frame."""
    grey = np.zeros((8, 10), np.uint8)
    grey[2:5, 3:7] = 255
    Image.fromarray(np.stack([grey, np.full_like(grey, 255)], axis=-1), "LA").save(tmp_path / "opaque.png")
    assert np.array_equal(read_labels(tmp_path / "opaque.png"), grey)
    see_through = np.stack([grey, np.where(grey > 0, 255, 0).astype(np.uint8)], axis=-1)
    Image.fromarray(see_through, "LA").save(tmp_path / "alpha.png")
    with pytest.raises(SampleSkipped, match="LA-mode"):
        read_labels(tmp_path / "alpha.png")
