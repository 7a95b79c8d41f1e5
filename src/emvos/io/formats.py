"""Result formats besides palette PNGs: per-object binary PNGs, soft probabilities (8-bit PNGs or
``.npz``), COCO run-length-encoded JSON and YOLO segmentation polygons; each with its reader.

==========  ==============================================================================
``binary``  ``OUT/<id>/<frame>.png``: one 0/255 greyscale PNG per object and frame
``soft``    ``OUT/<id>/<frame>.png``: the object's probability x 255 (8-bit greyscale)
``npz``     ``OUT/<frame>.npz``: ``labels`` ``(H, W) uint8``, ``object_ids`` ``(O,)``,
            ``probabilities`` ``(O, H, W) uint8`` (probability x 255)
``coco``    ``OUT/annotations.json``: COCO instances, one image per frame, one category per
            object id, masks as compressed RLE (pycocotools)
``yolo``    ``OUT/<frame>.txt``: one line per polygon, ``class x1 y1 x2 y2 ...`` in coordinates
            normalised to ``[0, 1]``; class ``id - 1``; ``OUT/classes.txt`` names the classes
==========  ==============================================================================

Every writer takes ``write(name, labels, object_ids, probabilities)`` per frame and ``close()``;
:func:`read_results` reads any format back to ``{frame name: (H, W) uint8 labels}``;
:func:`read_npz_frame` one ``npz`` frame with its probabilities.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import numpy as np

from emvos.errors import EmvosInputError
from emvos.io.files import atomic_file, cannot_write, write_text_atomically
from emvos.io.masks import read_label_png, write_label_png

#: ``--format`` choices: the palette PNGs of :class:`~emvos.io.LabelWriter`, then this module's.
FORMATS = ("palette", "binary", "soft", "npz", "coco", "yolo")
#: Formats that need each object's probabilities.
SOFT_FORMATS = frozenset({"soft", "npz"})
COCO_FILE = "annotations.json"
YOLO_CLASSES = "classes.txt"


def _save_png(array: np.ndarray, target: Path) -> None:
    """Write ``(H, W) uint8`` as a greyscale PNG atomically (:func:`~emvos.io.masks.write_label_png`)."""
    try:
        write_label_png(target, array, mode="L")
    except OSError as error:
        raise cannot_write(target, error) from error


class ResultWriter(ABC):
    """Writes one video's results in a format; use as a context manager.

    Args:
        out_dir: The output folder (created if missing).
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise EmvosInputError(f"{self.out_dir}: cannot create the output folder ({error.strerror or error}); "
                                  "choose another path") from error

    @abstractmethod
    def write(self, name: str, labels: np.ndarray, object_ids: Sequence[int],
              probabilities: np.ndarray | None = None) -> None:
        """Save one frame.

        Args:
            name: The frame's name (file stem).
            labels: ``(H, W) uint8`` object ids, 0 = background.
            object_ids: The objects tracked at this frame (some may have no pixel).
            probabilities: ``(len(object_ids), H, W) uint8`` probability x 255, or ``None``.
        """

    def close(self) -> None:  # noqa: B027 (per-frame formats have nothing to finish)
        """Finish the files that cover the whole video (nothing for per-frame formats)."""

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


class BinaryWriter(ResultWriter):
    """``OUT/<id>/<frame>.png``: 0/255 per object (``soft=False``) or probability x 255 (``soft=True``)."""

    def __init__(self, out_dir: str | Path, *, soft: bool = False) -> None:
        super().__init__(out_dir)
        self.soft = soft

    def write(self, name: str, labels: np.ndarray, object_ids: Sequence[int],
              probabilities: np.ndarray | None = None) -> None:
        if self.soft and probabilities is None and object_ids:
            raise ValueError("probabilities: the soft format needs the objects' probabilities")
        for slot, object_id in enumerate(object_ids):
            folder = self.out_dir / str(object_id)
            folder.mkdir(exist_ok=True)
            if not self.soft:
                plane = np.where(labels == object_id, np.uint8(255), np.uint8(0))
            elif probabilities is not None:  # checked above
                plane = probabilities[slot]
            _save_png(np.ascontiguousarray(plane), folder / f"{name}.png")


class NpzWriter(ResultWriter):
    """``OUT/<frame>.npz`` with ``labels``, ``object_ids`` and ``probabilities`` (see the module)."""

    def write(self, name: str, labels: np.ndarray, object_ids: Sequence[int],
              probabilities: np.ndarray | None = None) -> None:
        if probabilities is None:
            probabilities = np.zeros((len(object_ids), *labels.shape), np.uint8)
        with atomic_file(self.out_dir / f"{name}.npz") as file:
            np.savez_compressed(file, labels=labels, object_ids=np.array(object_ids, np.uint8),
                                probabilities=probabilities)


class CocoWriter(ResultWriter):
    """``OUT/annotations.json``: COCO instances with compressed RLE masks, written at :meth:`close`."""

    def __init__(self, out_dir: str | Path) -> None:
        super().__init__(out_dir)
        self.images: list[dict[str, object]] = []
        self.annotations: list[dict[str, object]] = []
        self.objects: set[int] = set()

    def write(self, name: str, labels: np.ndarray, object_ids: Sequence[int],
              probabilities: np.ndarray | None = None) -> None:
        from pycocotools import mask as coco_mask

        image_id = len(self.images) + 1
        height, width = labels.shape
        self.images.append({"id": image_id, "file_name": name, "height": height, "width": width})
        for object_id in sorted(int(i) for i in np.unique(labels) if i):
            rle = coco_mask.encode(np.asfortranarray(labels == object_id, dtype=np.uint8))
            self.objects.add(object_id)
            self.annotations.append({
                "id": len(self.annotations) + 1, "image_id": image_id, "category_id": object_id,
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                "area": int(coco_mask.area(rle)), "bbox": [float(v) for v in coco_mask.toBbox(rle)],
                "iscrowd": 0,
            })

    def close(self) -> None:
        document = {"images": self.images, "annotations": self.annotations,
                    "categories": [{"id": i, "name": f"object {i}"} for i in sorted(self.objects)]}
        write_text_atomically(self.out_dir / COCO_FILE, json.dumps(document))


class YoloWriter(ResultWriter):
    """``OUT/<frame>.txt``: YOLO segmentation polygons (outer contours; holes are not representable)."""

    def __init__(self, out_dir: str | Path) -> None:
        super().__init__(out_dir)
        self.objects: set[int] = set()

    def write(self, name: str, labels: np.ndarray, object_ids: Sequence[int],
              probabilities: np.ndarray | None = None) -> None:
        import cv2

        height, width = labels.shape
        lines = []
        for object_id in sorted(int(i) for i in np.unique(labels) if i):
            self.objects.add(object_id)
            contours, _ = cv2.findContours((labels == object_id).astype(np.uint8), cv2.RETR_EXTERNAL,
                                           cv2.CHAIN_APPROX_SIMPLE)
            for contour in contours:
                if len(contour) < 3:
                    continue
                # Pixel centres to the continuous frame: the polygon through the centres of the outer
                # pixels, moved half a pixel out, covers them when filled.
                points = (contour[:, 0, :].astype(np.float64) + 0.5) / (width, height)
                lines.append(f"{object_id - 1} " + " ".join(f"{v:.6f}" for v in points.ravel()))
        write_text_atomically(self.out_dir / f"{name}.txt", "".join(line + "\n" for line in lines))

    def close(self) -> None:
        top = max(self.objects, default=0)
        write_text_atomically(self.out_dir / YOLO_CLASSES, "".join(f"object {i}\n" for i in range(1, top + 1)))


def result_writer(format: str, out_dir: str | Path) -> ResultWriter:
    """The writer of ``format`` (one of :data:`FORMATS` but ``palette``)."""
    writers = {"binary": lambda: BinaryWriter(out_dir), "soft": lambda: BinaryWriter(out_dir, soft=True),
               "npz": lambda: NpzWriter(out_dir), "coco": lambda: CocoWriter(out_dir),
               "yolo": lambda: YoloWriter(out_dir)}
    if format not in writers:
        raise ValueError(f"format must be one of {', '.join(writers)}, got {format!r}")
    return writers[format]()


def read_results(format: str, out_dir: str | Path, size: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """Read results written in ``format`` back to ``{frame name: (H, W) uint8 object ids}``.

    Soft formats give each pixel to the most probable object whose probability is at least one
    half. YOLO files do not store the frame size: pass ``size`` ``(H, W)``.
    """
    out = Path(out_dir)
    if format == "palette":
        return {p.stem: read_label_png(p, what="result mask").labels for p in sorted(out.glob("*.png"))}
    if format in ("binary", "soft"):
        stacks: dict[str, list[tuple[int, np.ndarray]]] = {}
        for folder in sorted((p for p in out.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)):
            for png in folder.glob("*.png"):
                plane = read_label_png(png, what="result mask").labels
                stacks.setdefault(png.stem, []).append((int(folder.name), plane))
        return {name: _winner([i for i, _ in planes], np.stack([p for _, p in planes]))
                for name, planes in stacks.items()}
    if format == "npz":
        return {path.stem: read_npz_frame(path)[0] for path in sorted(out.glob("*.npz"))}
    if format == "coco":
        from pycocotools import mask as coco_mask

        document = json.loads((out / COCO_FILE).read_text())
        result = {image["file_name"]: np.zeros((image["height"], image["width"]), np.uint8)
                  for image in document["images"]}
        names = {image["id"]: image["file_name"] for image in document["images"]}
        for annotation in document["annotations"]:
            segmentation = dict(annotation["segmentation"], counts=annotation["segmentation"]["counts"].encode())
            labels = result[names[annotation["image_id"]]]
            labels[coco_mask.decode(segmentation).astype(bool)] = annotation["category_id"]
        return result
    if format == "yolo":
        if size is None:
            raise ValueError("size: reading YOLO polygons needs the frame size (H, W)")
        return {path.stem: fill_polygons([(cls + 1, points) for cls, points in read_yolo_polygons(path)], size)
                for path in sorted(p for p in out.glob("*.txt") if p.name != YOLO_CLASSES)}
    raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")


def read_yolo_polygons(path: str | Path) -> list[tuple[int, np.ndarray]]:
    """The polygons of a YOLO segmentation file: ``(class, (N, 2) float64 x, y normalised to [0, 1])`` per line.

    Raises:
        ValueError: a line that is not a class followed by at least three ``x y`` pairs.
    """
    polygons = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        values = line.split()
        if not values:
            continue
        if len(values) < 7 or len(values) % 2 == 0:
            raise ValueError(f"{path}:{number}: a YOLO polygon line is a class and at least 3 x y pairs")
        polygons.append((int(values[0]), np.array(values[1:], np.float64).reshape(-1, 2)))
    return polygons


def fill_polygons(polygons: Sequence[tuple[int, np.ndarray]], size: tuple[int, int]) -> np.ndarray:
    """Rasterise ``(id, (N, 2) normalised x, y)`` polygons in order (later ones on top) into ``(H, W) uint8`` ids."""
    import cv2

    height, width = size
    labels = np.zeros(size, np.uint8)
    for object_id, points in polygons:
        cv2.fillPoly(labels, [np.round(points * (width, height) - 0.5).astype(np.int32)], int(object_id))
    return labels


def read_npz_frame(path: str | Path) -> tuple[np.ndarray, tuple[int, ...], np.ndarray]:
    """One frame of the ``npz`` format (:class:`NpzWriter`).

    Returns:
        ``(labels, object_ids, probabilities)``: ``(H, W) uint8`` ids, the objects tracked at the
        frame, and their ``(O, H, W) uint8`` probabilities x 255 (O = ``len(object_ids)``).
    """
    with np.load(path) as data:
        return data["labels"], tuple(int(i) for i in data["object_ids"]), data["probabilities"]


def _winner(object_ids: list[int], planes: np.ndarray) -> np.ndarray:
    """``(O, H, W) uint8`` planes (0/255 or probability x 255) -> ``(H, W) uint8`` ids (at least one half)."""
    best = planes.argmax(axis=0)
    ids = np.array(object_ids, np.uint8)[best]
    return np.where(planes.max(axis=0) >= 128, ids, np.uint8(0))
