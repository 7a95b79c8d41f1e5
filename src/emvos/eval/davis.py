"""Evaluate a folder of predicted masks on DAVIS, as the official toolkit does (semi-supervised).

Layout:

* ``RESULTS/<sequence>/<frame>.png``: indexed PNGs, pixel value = object id (0 = background),
  named like the ground-truth annotations.
* ``DAVIS_ROOT/Annotations/480p/<sequence>/<frame>.png``: ground truth, every frame annotated;
  ``DAVIS_ROOT/ImageSets/<year>/<split>.txt``: the sequences of each split, one per line;
  ``DAVIS_ROOT/JPEGImages/480p/<sequence>/``: the frames (only counted, to catch partial
  annotations).

Protocol (that of ``davis2017-evaluation``'s ``evaluation_method.py --task semi-supervised``):

* The first frame (given as input) and the last frame are not scored, so result PNGs are needed
  for every annotated frame but those two.
* DAVIS 2017 (``year=2017``): the objects of a sequence are the ids ``1..N``, ``N`` being the
  largest id in the first annotated frame. Each object is scored on its own; an object absent from
  the results scores as an empty mask, and a result id above ``N`` is an error (as in the toolkit).
  Ground-truth pixels of value 255 are treated as background, as the toolkit's semi-supervised
  evaluation effectively does (it zeroes them and passes no void mask), so predictions there count
  as false positives.
* DAVIS 2016 (``year=2016``): ground truth and results are binarised (any nonzero value is the
  foreground, which makes DAVIS-2016's 0/255 masks one object) and scored as one object per
  sequence.
* J and F per frame are those of :mod:`emvos.eval.metrics`; each object gets mean, recall and decay
  of both, and the global numbers are plain means over all objects of all sequences
  (``J&F-Mean`` is the mean of J-Mean and F-Mean). Rows are named ``<sequence>_<object id>``.

Sequences are evaluated in parallel in a process pool, and each sequence vectorised over frames.
"""

from __future__ import annotations

import csv
import io
import json
import math
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from emvos.errors import EmvosInputError
from emvos.eval.metrics import Statistics, object_statistics, region_and_boundary
from emvos.io.files import write_text_atomically
from emvos.io.masks import read_label_png

#: The DAVIS editions :func:`evaluate_results` understands.
YEARS = (2016, 2017)
#: The resolution folder the toolkit evaluates.
RESOLUTION = "480p"
#: Column names of the toolkit's ``global_results-<split>.csv``.
GLOBAL_COLUMNS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
#: Column names of the toolkit's ``per-sequence_results-<split>.csv``.
PER_SEQUENCE_COLUMNS = ("Sequence", "J-Mean", "F-Mean")

LabelArray = npt.NDArray[np.integer]


@dataclass(frozen=True)
class ObjectResult:
    """The scores of one object of one sequence.

    Attributes:
        sequence: sequence name.
        object_id: the object's id in the annotations (1 for DAVIS 2016).
        frames: names (without ``.png``) of the T scored frames.
        j_per_frame: J of each scored frame, float64 of shape ``(T,)``.
        f_per_frame: F of each scored frame, float64 of shape ``(T,)``.
        j: statistics of ``j_per_frame``.
        f: statistics of ``f_per_frame``.
    """

    sequence: str
    object_id: int
    frames: tuple[str, ...]
    j_per_frame: npt.NDArray[np.float64]
    f_per_frame: npt.NDArray[np.float64]
    j: Statistics
    f: Statistics

    @property
    def name(self) -> str:
        """The toolkit's row name, ``<sequence>_<object id>``."""
        return f"{self.sequence}_{self.object_id}"


@dataclass(frozen=True)
class EvaluationResult:
    """The scores of a results folder on a DAVIS split.

    Attributes:
        year: DAVIS edition, 2016 or 2017.
        split: split name (``ImageSets/<year>/<split>.txt``).
        sequences: the evaluated sequences, in evaluation order.
        objects: the scores of every object, by sequence then object id.
        j: J statistics averaged over all objects.
        f: F statistics averaged over all objects.
    """

    year: int
    split: str
    sequences: tuple[str, ...]
    objects: tuple[ObjectResult, ...]
    j: Statistics
    f: Statistics

    @property
    def jf_mean(self) -> float:
        """``J&F-Mean``: the mean of J-Mean and F-Mean."""
        return (self.j.mean + self.f.mean) / 2.0

    def global_row(self) -> dict[str, float]:
        """The global numbers keyed by the toolkit's column names (:data:`GLOBAL_COLUMNS`)."""
        values = (
            self.jf_mean,
            self.j.mean,
            self.j.recall,
            self.j.decay,
            self.f.mean,
            self.f.recall,
            self.f.decay,
        )
        return dict(zip(GLOBAL_COLUMNS, values, strict=True))


@dataclass(frozen=True)
class _SequenceJob:
    """What a worker needs to score one sequence; all paths already checked to exist."""

    name: str
    year: int
    first_annotation: Path
    annotations: tuple[Path, ...]
    results: tuple[Path, ...]


def evaluate_results(
    results_dir: str | os.PathLike[str],
    davis_root: str | os.PathLike[str],
    *,
    year: int = 2017,
    split: str = "val",
    sequences: Sequence[str] | None = None,
    workers: int | None = None,
) -> EvaluationResult:
    """Score the masks in ``results_dir`` against the DAVIS ground truth in ``davis_root``.

    Args:
        results_dir: folder holding ``<sequence>/<frame>.png`` result masks.
        davis_root: DAVIS folder holding ``Annotations/480p`` and ``ImageSets/<year>``.
        year: 2017 (multi-object) or 2016 (binarised, one object per sequence).
        split: split whose sequences are scored, read from ``ImageSets/<year>/<split>.txt``.
        sequences: score these sequences instead of the split's (the split file is then unused).
        workers: processes scoring sequences in parallel; default: :func:`available_cpus`.

    Returns:
        The per-object and global scores.

    Raises:
        EmvosInputError: a folder, file or sequence is missing, or a PNG is unreadable, of the wrong
            size, or holds an object id the ground truth does not have.
    """
    if year not in YEARS:
        raise EmvosInputError(f"unknown DAVIS year {year}; use one of {', '.join(map(str, YEARS))}")
    if workers is not None and workers < 1:
        raise EmvosInputError(f"--workers must be at least 1, got {workers}")
    results_path = Path(results_dir)
    root = Path(davis_root)
    if not results_path.is_dir():
        raise EmvosInputError(f"results folder {results_path} not found; pass the folder holding <sequence>/*.png")
    annotations_root = root / "Annotations" / RESOLUTION
    if not annotations_root.is_dir():
        raise EmvosInputError(
            f"{annotations_root} not found; --davis-root must be a DAVIS folder with Annotations/{RESOLUTION}"
        )
    names = _sequence_names(root, year, split, sequences)
    jobs = [_plan_sequence(root, results_path, name, year) for name in names]

    n_workers = min(workers or available_cpus(), len(jobs))
    if n_workers <= 1:
        per_sequence = [_evaluate_sequence(job) for job in jobs]
    else:
        with ProcessPoolExecutor(max_workers=n_workers, mp_context=_pool_context()) as pool:
            per_sequence = list(pool.map(_evaluate_sequence, jobs))

    objects = tuple(obj for sequence_objects in per_sequence for obj in sequence_objects)
    return EvaluationResult(
        year=year,
        split=split,
        sequences=tuple(names),
        objects=objects,
        j=_average([obj.j for obj in objects]),
        f=_average([obj.f for obj in objects]),
    )


def available_cpus() -> int:
    """CPUs this process may run on (its affinity where the platform tells), the default worker count."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return os.cpu_count() or 1


def _pool_context() -> multiprocessing.context.BaseContext:
    """Fork where the platform has it (workers start at once and inherit the imports), else default."""
    if "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()


def _average(stats: list[Statistics]) -> Statistics:
    """Means over objects, as the toolkit's ``np.mean`` (NaN propagates; NaN when there are none)."""
    if not stats:
        return Statistics(math.nan, math.nan, math.nan)
    return Statistics(
        float(np.mean([s.mean for s in stats])),
        float(np.mean([s.recall for s in stats])),
        float(np.mean([s.decay for s in stats])),
    )


def _sequence_names(root: Path, year: int, split: str, sequences: Sequence[str] | None) -> list[str]:
    """The sequences to score, in order, each checked to have annotations."""
    if sequences is None:
        split_file = root / "ImageSets" / str(year) / f"{split}.txt"
        if not split_file.is_file():
            found = sorted(p.stem for p in split_file.parent.glob("*.txt"))
            hint = f"available: {', '.join(found)}" if found else f"no split files in {split_file.parent}"
            raise EmvosInputError(f"split file {split_file} not found; pass --split NAME ({hint}) or --sequences")
        lines = split_file.read_text(encoding="utf-8").splitlines()
        names = list(dict.fromkeys(line.strip() for line in lines if line.strip()))
        source = f"listed in {split_file}"
    else:
        names = list(dict.fromkeys(sequences))
        source = "requested"
    if not names:
        raise EmvosInputError("no sequences to evaluate; check the split file or --sequences")
    annotations_root = root / "Annotations" / RESOLUTION
    unknown = [name for name in names if not name or not (annotations_root / name).is_dir()]
    if unknown:
        raise EmvosInputError(
            f"unknown sequence(s) {', '.join(map(repr, unknown))} {source}: no folder in {annotations_root}; "
            "check the names, --year and --davis-root"
        )
    return names


def _plan_sequence(root: Path, results_dir: Path, name: str, year: int) -> _SequenceJob:
    """Check that every file scoring ``name`` needs exists, and list them."""
    annotation_dir = root / "Annotations" / RESOLUTION / name
    annotations = sorted(annotation_dir.glob("*.png"))
    images_dir = root / "JPEGImages" / RESOLUTION / name
    n_images = len(list(images_dir.glob("*.jpg"))) if images_dir.is_dir() else 0
    if n_images > len(annotations):
        raise EmvosInputError(
            f"{annotation_dir} has {len(annotations)} annotations for {n_images} frames in {images_dir}; "
            "the evaluation needs every frame annotated (use a split with full ground truth)"
        )
    if len(annotations) < 3:
        raise EmvosInputError(
            f"{annotation_dir} has {len(annotations)} annotated frames; at least 3 are needed, since the "
            "first and last frames are not scored"
        )
    result_dir = results_dir / name
    if not result_dir.is_dir():
        raise EmvosInputError(
            f"results folder {result_dir} not found; write masks for sequence {name!r} or leave it out with --sequences"
        )
    results = tuple(result_dir / annotation.name for annotation in annotations[1:-1])
    for path in results:
        if not path.is_file():
            raise EmvosInputError(
                f"result mask {path} not found; every frame but the first and last needs a PNG named like "
                f"its annotation in {annotation_dir}"
            )
    return _SequenceJob(name, year, annotations[0], tuple(annotations[1:-1]), results)


def _read_labels(path: Path, what: str) -> LabelArray:
    """The ``(H, W) uint8`` labels of an object-id PNG (:func:`emvos.io.masks.read_label_png`).

    A grayscale or palette image with a fully opaque alpha band (some DAVIS-2016 annotations are
    saved so) is read without it.
    """
    return read_label_png(path, what=what, opaque_alpha=True).labels


def _read_stack(paths: Sequence[Path], shape: tuple[int, ...], what: str, fix: str) -> LabelArray:
    """The labels of ``paths`` stacked to (T, H, W), each checked to have shape ``shape`` (H, W)."""
    frames = []
    for path in paths:
        labels = _read_labels(path, what)
        if labels.shape != shape:
            raise EmvosInputError(
                f"{what} {path} is {labels.shape[1]}x{labels.shape[0]} but the ground truth is "
                f"{shape[1]}x{shape[0]} (width x height); {fix}"
            )
        frames.append(labels)
    return np.stack(frames)


def _evaluate_sequence(job: _SequenceJob) -> list[ObjectResult]:
    """Score every object of one sequence (runs in a worker process)."""
    first = _read_labels(job.first_annotation, "annotation")
    gt = _read_stack(job.annotations, first.shape, "annotation", "all annotations of a sequence must match")
    results = _read_stack(job.results, first.shape, "result mask", "save masks at the annotations' resolution")
    frames = tuple(path.stem for path in job.annotations)

    scores = []
    for object_id, gt_masks, result_masks in _object_masks(job, first, gt, results):
        j, f = region_and_boundary(gt_masks, result_masks)
        scores.append(ObjectResult(job.name, object_id, frames, j, f, object_statistics(j), object_statistics(f)))
    return scores


def _object_masks(
    job: _SequenceJob, first: LabelArray, gt: LabelArray, results: LabelArray
) -> Iterator[tuple[int, npt.NDArray[np.bool_], npt.NDArray[np.bool_]]]:
    """``(object id, gt masks, result masks)`` of each object, masks of shape (T, H, W), one at a time.

    ``first`` is the first annotation (H, W); ``gt`` and ``results`` are the scored frames' labels
    (T, H, W).
    """
    if job.year == 2016:
        yield 1, gt != 0, results != 0
        return
    n_objects = int(np.where(first == 255, 0, first).max())
    if n_objects == 0:
        raise EmvosInputError(
            f"annotation {job.first_annotation} has no object ids (1-254); for DAVIS-2016 masks (0/255) use --year 2016"
        )
    per_frame_max = results.reshape(len(results), -1).max(axis=1)
    too_high = np.flatnonzero(per_frame_max > n_objects)
    if too_high.size:
        index = int(too_high[0])
        raise EmvosInputError(
            f"result mask {job.results[index]} holds object id {int(per_frame_max[index])} but sequence "
            f"{job.name!r} has {n_objects} objects; use the ids of the first annotation"
        )
    for object_id in range(1, n_objects + 1):
        yield object_id, gt == object_id, results == object_id


def _format_value(value: float) -> str:
    """A number as the toolkit's CSVs write it (``%.3f``, NaN as an empty field)."""
    return "" if math.isnan(value) else f"{value:.3f}"


def global_csv(result: EvaluationResult) -> str:
    """The text of the toolkit's ``global_results-<split>.csv`` for ``result``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(GLOBAL_COLUMNS)
    writer.writerow([_format_value(v) for v in result.global_row().values()])
    return buffer.getvalue()


def per_sequence_csv(result: EvaluationResult) -> str:
    """The text of the toolkit's ``per-sequence_results-<split>.csv`` (one row per object)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(PER_SEQUENCE_COLUMNS)
    for obj in result.objects:
        writer.writerow([obj.name, _format_value(obj.j.mean), _format_value(obj.f.mean)])
    return buffer.getvalue()


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) else value


def result_json(result: EvaluationResult) -> str:
    """The numbers of ``result`` as JSON text (full precision; NaN as ``null``), with every object's J
    and F per scored frame."""
    document = {
        "benchmark": f"DAVIS {result.year}",
        "protocol": "semi-supervised",
        "split": result.split,
        "sequences": list(result.sequences),
        "global": {key: _json_number(value) for key, value in result.global_row().items()},
        "per_object": [
            {
                "Sequence": obj.name,
                "sequence": obj.sequence,
                "object_id": obj.object_id,
                "frames": len(obj.frames),
                "J-Mean": _json_number(obj.j.mean),
                "J-Recall": _json_number(obj.j.recall),
                "J-Decay": _json_number(obj.j.decay),
                "F-Mean": _json_number(obj.f.mean),
                "F-Recall": _json_number(obj.f.recall),
                "F-Decay": _json_number(obj.f.decay),
                "scored_frames": list(obj.frames),
                "J-per-frame": [_json_number(float(v)) for v in obj.j_per_frame],
                "F-per-frame": [_json_number(float(v)) for v in obj.f_per_frame],
            }
            for obj in result.objects
        ],
    }
    return json.dumps(document, indent=2) + "\n"


def report_paths(results_dir: str | os.PathLike[str], split: str) -> tuple[Path, Path, Path]:
    """Where :func:`write_reports` writes: the global CSV, the per-sequence CSV and the JSON."""
    folder = Path(results_dir)
    return (
        folder / f"global_results-{split}.csv",
        folder / f"per-sequence_results-{split}.csv",
        folder / f"eval_results-{split}.json",
    )


def write_reports(result: EvaluationResult, results_dir: str | os.PathLike[str]) -> tuple[Path, Path, Path]:
    """Write the toolkit's two CSVs and a JSON of the same numbers into ``results_dir``.

    Returns:
        The paths written, as :func:`report_paths`.
    """
    paths = report_paths(results_dir, result.split)
    for path, text in zip(paths, (global_csv(result), per_sequence_csv(result), result_json(result)), strict=True):
        write_text_atomically(path, text)
    return paths


def format_report(result: EvaluationResult) -> str:
    """A readable table of the global numbers and of J-Mean and F-Mean per object."""
    title = (
        f"DAVIS {result.year} {result.split} (semi-supervised): {len(result.sequences)} sequences, "
        f"{len(result.objects)} objects"
    )
    global_values = [_format_value(v) or "nan" for v in result.global_row().values()]
    widths = [max(len(c), len(v)) for c, v in zip(GLOBAL_COLUMNS, global_values, strict=True)]
    lines = [
        title,
        "  ".join(c.rjust(w) for c, w in zip(GLOBAL_COLUMNS, widths, strict=True)),
        "  ".join(v.rjust(w) for v, w in zip(global_values, widths, strict=True)),
        "",
    ]
    name_width = max([len(PER_SEQUENCE_COLUMNS[0])] + [len(obj.name) for obj in result.objects])
    lines.append(f"{PER_SEQUENCE_COLUMNS[0]:<{name_width}}  {PER_SEQUENCE_COLUMNS[1]:>6}  {PER_SEQUENCE_COLUMNS[2]:>6}")
    for obj in result.objects:
        j_mean = _format_value(obj.j.mean) or "nan"
        f_mean = _format_value(obj.f.mean) or "nan"
        lines.append(f"{obj.name:<{name_width}}  {j_mean:>6}  {f_mean:>6}")
    return "\n".join(lines)
