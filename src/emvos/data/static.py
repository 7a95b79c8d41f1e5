"""Pseudo-videos from static images (pre-training, paper §3.7, on COCO in the paper).

A clip is the source image followed by ``L - 1`` sequentially augmented copies (paper: ``L = 5``).
Frame ``t`` is the source warped by ``A_t = B_t @ ... @ B_1``
(:func:`~emvos.data.transforms.sequential_affine`): each step ``B_i`` is an independent
:func:`~emvos.data.transforms.random_affine_step` with the official ranges (rotation +-10 degrees,
scale 0.9-1.1, shear +-10 degrees on each axis, no translation by default), so frame ``t`` is frame
``t - 1`` augmented once more. Each frame is warped straight from the source (one nearest-neighbour
resampling at the source resolution; uncovered area filled with the ImageNet mean colour), its mask
with the same matrix. Then the common augmentation of
:meth:`~emvos.data.base.ClipDataset._render`: flips, balanced crop drawn on frame 0 (the source)
and applied to every frame, the target picked among the objects inside it (with ``joint``, the
other instances inside it are tracked beside the target).

Differences from the official ``TrainCOCO``: there, frame 0 is itself warped (the paper describes "a
source image and 4 sequentially-augmented images", which is what this does), and the steps'
parameters are accumulated (angles and shears summed, scales multiplied) rather than the matrices
composed.

Sources: :func:`image_folder_pairs` (any folder of images with instance-mask PNGs, e.g. DAVIS
frames used as static images), :func:`coco_instances` (a COCO instances json; needs
``pycocotools``) and :func:`yolo_instances` (YOLO segmentation polygons, e.g. COCO128-seg).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from emvos.data.base import (
    ClipDataset,
    Sample,
    SampleSkipped,
    read_labels,
    read_rgb,
    report_scan,
)
from emvos.data.transforms import (
    CROP_RATIO,
    CROP_SCALE,
    Labels,
    sequential_affine,
    warp_image,
    warp_labels,
)
from emvos.errors import EmvosInputError
from emvos.io import FRAME_EXTENSIONS, natural_sort_key
from emvos.io.formats import fill_polygons, read_yolo_polygons

#: Largest number of COCO instances kept per image (ids must fit in a uint8 map).
MAX_INSTANCES = 255


class StaticImage(Protocol):
    """One static training image with its instance ids."""

    @property
    def name(self) -> str:
        """The image file, for messages."""
        ...

    def load(self) -> tuple[Image.Image, Labels]:
        """Decode ``(RGB image W x H, (H, W) uint8 ids)``, or raise
        :class:`~emvos.data.base.SampleSkipped`."""
        ...


@dataclass(frozen=True)
class PairedImage:
    """An image file and its instance-mask PNG (pixel value = instance id, 0 = background)."""

    image: Path
    mask: Path

    @property
    def name(self) -> str:
        return str(self.image)

    def load(self) -> tuple[Image.Image, Labels]:
        labels = read_labels(self.mask)
        return read_rgb(self.image, labels.shape), labels


@dataclass(frozen=True)
class CocoImage:
    """A COCO image and its non-crowd instance segmentations (polygons or RLE), largest first.

    Instance ``i`` (from 1) gets id ``i``; where instances overlap, the later (smaller) one wins,
    so small objects are not hidden under large ones.
    """

    image: Path
    height: int
    width: int
    segmentations: tuple[Any, ...]

    @property
    def name(self) -> str:
        return str(self.image)

    def load(self) -> tuple[Image.Image, Labels]:
        from pycocotools import mask as mask_utils

        image = read_rgb(self.image, (self.height, self.width))
        labels = np.zeros((self.height, self.width), dtype=np.uint8)
        for object_id, segmentation in enumerate(self.segmentations, start=1):
            try:
                if isinstance(segmentation, list):  # polygons
                    rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, self.height, self.width))
                elif isinstance(segmentation["counts"], list):  # uncompressed RLE
                    rle = mask_utils.frPyObjects(segmentation, self.height, self.width)
                else:
                    rle = segmentation
                labels[mask_utils.decode(rle) != 0] = object_id
            except (ValueError, TypeError, KeyError, IndexError) as error:
                raise SampleSkipped(
                    "unreadable", f"{self.image}: cannot decode instance {object_id} ({error!r})"
                ) from error
        return image, labels


@dataclass(frozen=True)
class YoloImage:
    """An image and its YOLO segmentation polygons (:func:`emvos.io.formats.read_yolo_polygons`).

    Each polygon is one instance; instances get ids ``1, 2, ...`` largest first, and where they
    overlap the later (smaller) one wins, as in :class:`CocoImage`. At most :data:`MAX_INSTANCES`.
    """

    image: Path
    labels: Path

    @property
    def name(self) -> str:
        return str(self.image)

    def load(self) -> tuple[Image.Image, Labels]:
        image = read_rgb(self.image)
        try:
            polygons = [points for _, points in read_yolo_polygons(self.labels)]
        except (OSError, ValueError) as error:
            raise SampleSkipped("unreadable", f"{self.labels}: cannot read these polygons ({error})") from error
        if not polygons:
            raise SampleSkipped("empty_mask", f"{self.labels}: no instance")
        width, height = image.size
        largest_first = sorted(polygons, key=lambda p: -_polygon_area(p * (width, height)))[:MAX_INSTANCES]
        labels = fill_polygons([(i, p) for i, p in enumerate(largest_first, start=1)], (height, width))
        return image, labels


def _polygon_area(points: np.ndarray) -> float:
    """Area of an ``(N, 2)`` polygon (shoelace formula)."""
    x, y = points[:, 0], points[:, 1]
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2)


@dataclass(frozen=True)
class StaticImages:
    """The images a :class:`StaticPseudoVideos` draws from, and what the scan left out.

    Attributes:
        origin: Where they come from, for messages.
        items: The usable images.
        excluded: Count of what was left out, by reason.
    """

    origin: str
    items: tuple[StaticImage, ...]
    excluded: dict[str, int] = field(default_factory=dict)


def image_folder_pairs(
    image_root: str | Path,
    mask_root: str | Path,
    *,
    sequences: Collection[str] | None = None,
    exclude: Collection[str] = (),
) -> StaticImages:
    """Find the images under ``image_root`` that have a mask PNG at the same path under ``mask_root``.

    ``image_root/<rel>/<stem>.jpg`` (or ``.jpeg``/``.png``) pairs with ``mask_root/<rel>/<stem>.png``.
    DAVIS layout: ``image_folder_pairs(root / "JPEGImages/480p", root / "Annotations/480p")``,
    where every frame of every sequence becomes a separate static image. Only names are checked
    here; unreadable files and masks without any object are skipped when drawn.

    Args:
        image_root: Folder searched recursively for images.
        mask_root: Folder of the masks, mirroring ``image_root``.
        sequences: Keep only images whose first folder below ``image_root`` is one of these.
        exclude: Leave out images whose first folder below ``image_root`` is one of these (e.g.
            held-out validation sequences).

    Returns:
        The pairs, in natural path order; ``excluded["missing_mask"]`` counts images without mask.

    Raises:
        EmvosInputError: ``image_root`` does not exist.
    """
    image_root, mask_root = Path(image_root), Path(mask_root)
    if not image_root.is_dir():
        raise EmvosInputError(f"{image_root}: no such image folder; check the path")
    include = None if sequences is None else set(sequences)
    left_out = set(exclude)
    items: list[StaticImage] = []
    missing = 0
    images = [path for path in image_root.rglob("*") if path.suffix.lower() in FRAME_EXTENSIONS]
    for path in sorted(images, key=lambda path: natural_sort_key(path.relative_to(image_root).as_posix())):
        relative = path.relative_to(image_root)
        group = relative.parts[0] if len(relative.parts) > 1 else ""
        if any(part.startswith(".") for part in relative.parts) or group in left_out:
            continue
        if include is not None and group not in include:
            continue
        mask = (mask_root / relative).with_suffix(".png")
        if mask.is_file():
            items.append(PairedImage(path, mask))
        else:
            missing += 1
    return StaticImages(f"{image_root}", tuple(items), {"missing_mask": missing})


def coco_instances(annotations: str | Path, image_root: str | Path) -> StaticImages:
    """The images of a COCO instances json that have at least one non-crowd instance.

    Needs ``pycocotools`` (``pip install pycocotools``) to decode the segmentations.

    Args:
        annotations: E.g. ``annotations/instances_train2017.json``.
        image_root: The folder of the images (``file_name`` in the json is relative to it).

    Returns:
        The images; ``excluded`` counts ``no_object`` (no usable instance) and ``missing_image``.
        At most :data:`MAX_INSTANCES` instances (the largest) are kept per image.

    Raises:
        EmvosInputError: pycocotools is missing, or the json cannot be read.
    """
    try:
        import pycocotools.mask  # noqa: F401
    except ImportError as error:
        raise EmvosInputError(
            "COCO annotations need pycocotools to decode their masks; `pip install pycocotools`"
        ) from error
    annotations, image_root = Path(annotations), Path(image_root)
    try:
        data = json.loads(annotations.read_text())
        images = {entry["id"]: entry for entry in data["images"]}
        instances: dict[int, list[tuple[float, Any]]] = {image_id: [] for image_id in images}
        for entry in data["annotations"]:
            if not entry.get("iscrowd", 0) and entry.get("segmentation") and entry["image_id"] in instances:
                instances[entry["image_id"]].append((float(entry.get("area", 0.0)), entry["segmentation"]))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise EmvosInputError(f"{annotations}: cannot read COCO instances ({error!r})") from error
    items: list[StaticImage] = []
    excluded = {"no_object": 0, "missing_image": 0}
    for image_id, entry in images.items():
        if not instances[image_id]:
            excluded["no_object"] += 1
            continue
        path = image_root / entry["file_name"]
        if not path.is_file():
            excluded["missing_image"] += 1
            continue
        largest_first = sorted(instances[image_id], key=lambda instance: -instance[0])[:MAX_INSTANCES]
        segmentations = tuple(segmentation for _, segmentation in largest_first)
        items.append(CocoImage(path, int(entry["height"]), int(entry["width"]), segmentations))
    return StaticImages(f"{annotations}", tuple(items), excluded)


def yolo_instances(image_root: str | Path, label_root: str | Path) -> StaticImages:
    """The images under ``image_root`` with a YOLO segmentation file ``label_root/<stem>.txt`` (e.g. COCO128-seg).

    Returns:
        The images; ``excluded["no_labels"]`` counts images without a label file.

    Raises:
        EmvosInputError: ``image_root`` does not exist.
    """
    image_root, label_root = Path(image_root), Path(label_root)
    if not image_root.is_dir():
        raise EmvosInputError(f"{image_root}: no such image folder; check the path")
    items: list[StaticImage] = []
    missing = 0
    images = [p for p in image_root.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS and not p.name.startswith(".")]
    for path in sorted(images, key=lambda p: natural_sort_key(p.name)):
        labels = label_root / f"{path.stem}.txt"
        if labels.is_file():
            items.append(YoloImage(path, labels))
        else:
            missing += 1
    return StaticImages(f"{image_root}", tuple(items), {"no_labels": missing})


class StaticPseudoVideos(ClipDataset):
    """Pseudo-video clips made from static images (see the module docstring).

    Draws, in order: the image (uniform), the ``L - 1`` affine steps, then
    :meth:`~emvos.data.base.ClipDataset._render` (flips, balanced crop on frame 0).
    """

    def __init__(
        self,
        images: StaticImages,
        *,
        clip_length: int = 5,
        crop_size: int = 384,
        seed: int = 0,
        degrees: float = 10.0,
        scale: tuple[float, float] = (0.9, 1.1),
        shear: float = 10.0,
        translate: float = 0.0,
        crop_scale: tuple[float, float] = CROP_SCALE,
        crop_ratio: tuple[float, float] = CROP_RATIO,
        joint: bool = False,
        joint_objects: int = 8,
    ) -> None:
        """Wrap a set of static images.

        Args:
            images: From :func:`image_folder_pairs` or :func:`coco_instances`.
            clip_length: ``L``, frames per clip including the source (paper: 5).
            crop_size: ``S`` (paper: 384).
            seed: Dataset seed: sample ``k`` depends only on ``(seed, k)``.
            degrees: Largest rotation per step, in degrees.
            scale: Range of the scale per step.
            shear: Largest shear per step and axis, in degrees.
            translate: Largest shift per step, as a fraction of the image side.
            crop_scale: Crop-area range relative to the 480p frame.
            crop_ratio: Crop aspect-ratio range.
            joint: Track several instances of the image together (ids ``1..K``; see
                :meth:`~emvos.data.base.ClipDataset._render`) instead of one target.
            joint_objects: Most instances a joint clip tracks.

        Raises:
            EmvosInputError: ``images`` holds no image.
        """
        super().__init__(
            seed=seed,
            clip_length=clip_length,
            crop_size=crop_size,
            crop_scale=crop_scale,
            crop_ratio=crop_ratio,
            joint=joint,
            joint_objects=joint_objects,
        )
        self.images = images
        self.degrees, self.scale, self.shear, self.translate = degrees, scale, shear, translate
        self.excluded = dict(images.excluded)
        report_scan(self.describe(), f"{len(images.items)} images", self.excluded)
        if not images.items:
            raise EmvosInputError(f"{self.describe()}: no usable image (left out: {self.excluded})")

    def describe(self) -> str:
        return f"StaticPseudoVideos({self.images.origin})"

    def _draw(self, rng: np.random.Generator) -> Sample:
        item = self.images.items[int(rng.integers(len(self.images.items)))]
        source, labels = item.load()
        if not labels.any():
            raise SampleSkipped("empty_mask", f"{item.name}: its mask has no object")
        width, height = source.size
        matrices = sequential_affine(
            rng,
            self.clip_length,
            height,
            width,
            degrees=self.degrees,
            scale=self.scale,
            shear=self.shear,
            translate=self.translate,
        )

        def load_frame(position: int) -> tuple[Image.Image, Labels]:
            if position == 0:
                return source, labels
            return warp_image(source, matrices[position]), warp_labels(labels, matrices[position])

        return self._render(load_frame, rng)
