"""What the app does, independent of the web framework: open a video, propagate, export.

An :class:`AppSession` ties a :class:`~emvos.app.workspace.Workspace` to a
:class:`~emvos.app.jobs.JobRunner` and to the folder whose files the page may open (the *root*).
The server (:mod:`emvos.app.server`) only translates requests into these calls.

Propagation and corrections
---------------------------
Propagating from frame ``k`` runs the predictor over the frames in propagation order (ascending
forward, descending backward: the predictor simply sees the reversed video), starting at the
*anchor*: ``k`` itself when it is annotated, else the nearest annotated frame before ``k`` in
that order. Before the anchor, the annotated frames that precede it in that order are replayed
(one forward pass each, nothing written), so every object starts with its latest annotation as
its reference — also objects that are absent from the anchor's mask. From the anchor to the end of
the video every frame is segmented and its result overwritten; an annotated frame on the way is
given to the predictor as a mask at a later frame (new objects, or a new reference for tracked
ones, as in the paper). Results before the anchor are kept.

So correcting a frame and propagating from it re-runs from the corrected frame with the state
the annotations define, without keeping the predictor's memory between runs: it survives a
restart of the server and costs one forward pass per earlier annotation.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import threading
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

from emvos.app.jobs import JobRunner, JobStatus, Progress
from emvos.app.workspace import Workspace
from emvos.errors import EmvosInputError
from emvos.io import DAVIS_PALETTE, FRAME_EXTENSIONS, VIDEO_EXTENSIONS, LabelWriter, OverlayWriter, open_frames
from emvos.io.files import atomic_file
from emvos.io.formats import FORMATS, SOFT_FORMATS, result_writer

if TYPE_CHECKING:
    from emvos.inference.predictor import VideoPredictor

Direction = Literal["forward", "backward"]


#: Formats the export offers besides the palette PNGs (:mod:`emvos.io.formats`, as ``segment --format``),
#: each written in a folder of its name.
EXPORT_FORMATS = tuple(f for f in FORMATS if f != "palette")
#: The formats an export writes when none are chosen.
DEFAULT_EXPORT_FORMATS = ("binary", "coco", "yolo")


class PathRefused(Exception):
    """A path that lies outside the folder the app may read."""


class WorkspaceOccupied(Exception):
    """Opening a video would replace the workspace's video, and replacing it was not confirmed."""


def resolve_inside(root: Path, requested: str) -> Path:
    """``requested`` (relative to ``root``, or absolute) resolved, symbolic links included.

    Raises:
        PathRefused: the resolved path is not ``root`` or inside it.
    """
    if "\x00" in requested:
        raise PathRefused("a path cannot contain NUL characters")
    candidate = (root / requested).resolve()
    if candidate != root and root not in candidate.parents:
        raise PathRefused(f"{requested}: outside the working folder {root}; the app only opens files inside it")
    return candidate


def safe_name(text: str) -> str:
    """``text`` reduced to letters, digits, ``.``, ``_`` and ``-`` (for file names); never empty."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return cleaned or "video"


def video_name(path: Path) -> str:
    """The short name of a video: a file's stem or a folder's name."""
    return path.stem if path.is_file() else path.name


def propagation_plan(num_frames: int, annotated: list[int], start: int,
                     direction: Direction) -> tuple[list[int], list[int]]:
    """The frames a propagation from ``start`` replays, and the frames it segments (module docstring).

    Returns:
        ``(replayed, segmented)``: annotated frames before the anchor and the frames from the
        anchor to the end, both in propagation order.

    Raises:
        EmvosInputError: no frame at or before ``start`` (in propagation order) is annotated.
    """
    order = list(range(num_frames)) if direction == "forward" else list(range(num_frames - 1, -1, -1))
    position = order.index(start)
    marked = set(annotated)
    earlier = [index for index in order[: position + 1] if index in marked]
    if not earlier:
        where = "before" if direction == "forward" else "after"
        raise EmvosInputError(f"no annotated frame at or {where} frame {start}: draw a mask on a frame first, "
                              f"then propagate {direction} from it")
    anchor = earlier[-1]
    return earlier[:-1], order[order.index(anchor):]


class _WorkspaceFrames(Sequence[np.ndarray]):
    """A workspace's frames as a sequence, each decoded when it is indexed: ``(H, W, 3) uint8`` RGB."""

    def __init__(self, workspace: Workspace, count: int) -> None:
        self._workspace = workspace
        self._count = count

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[np.ndarray]: ...

    def __getitem__(self, index: int | slice) -> np.ndarray | Sequence[np.ndarray]:
        if isinstance(index, slice):
            return [self[i] for i in range(self._count)[index]]
        return self._workspace.read_frame(range(self._count)[index])


class AppSession:
    """The app's state: a workspace, the folder it may open files from, the model and the job.

    Args:
        workspace: Where frames, annotations and results are kept.
        root: Folder whose videos and frame folders the page may open (nothing outside it).
        load_predictor: Builds the predictor; called once, by the first propagation (a missing
            model then fails that job, with its message, while annotation keeps working).
        model_name: How the page names the model (checkpoint path or "the shipped model").
    """

    def __init__(self, workspace: Workspace, root: Path, load_predictor: Callable[[], VideoPredictor],
                 model_name: str) -> None:
        self.workspace = workspace
        self.root = root.resolve()
        self.jobs = JobRunner()
        self.model_name = model_name
        self.model_error: str | None = None
        self._load_predictor = load_predictor
        self._predictor: VideoPredictor | None = None
        self._model_lock = threading.Lock()

    # -- state ----------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything the page shows apart from pixels, as a JSON-ready dict."""
        video = self.workspace.video
        job = self.jobs.status()
        exports = self.workspace.exports_dir
        return {
            "video": None if video is None else {
                "name": video.name, "source": video.source, "frames": video.num_frames, "height": video.height,
                "width": video.width, "fps": video.fps, "token": video.token, "frame_names": list(video.frame_names),
            },
            "annotated": self.workspace.annotated() if video else [],
            "results": self.workspace.results() if video else [],
            "objects": self.workspace.object_ids() if video else [],
            "exports": sorted(p.name for p in exports.glob("*") if p.is_file() and not p.name.startswith("."))
            if exports.is_dir() else [],
            "export_formats": {"offered": list(EXPORT_FORMATS), "default": list(DEFAULT_EXPORT_FORMATS)},
            "job": None if job is None else job.to_json(),
            "model": {"name": self.model_name, "error": self.model_error},
            "palette": DAVIS_PALETTE,
            "root": str(self.root),
            "workspace": str(self.workspace.path),
        }

    def list_folder(self, requested: str) -> dict[str, Any]:
        """The sub-folders and video files of a folder inside the root, for the page's file picker."""
        folder = resolve_inside(self.root, requested)
        if not folder.is_dir():
            raise EmvosInputError(f"{requested}: not a folder")
        entries = []
        for entry in sorted(folder.iterdir(), key=lambda p: p.name.lower()):
            if entry.name.startswith(".") or self.workspace.contains(entry.resolve()):
                continue
            if entry.is_dir():
                kind = "folder"
            elif entry.suffix.lower() in VIDEO_EXTENSIONS:
                kind = "video"
            else:
                continue
            entries.append({"name": entry.name, "kind": kind, "path": str(entry.relative_to(self.root))})
        frames = sum(1 for p in folder.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS)
        relative = "" if folder == self.root else str(folder.relative_to(self.root))
        return {"path": relative, "entries": entries, "frames": frames}

    # -- jobs -----------------------------------------------------------------------------------
    def open_path(self, requested: str, *, replace: bool = False) -> JobStatus:
        """Open a video file or frame folder inside the root (see :meth:`open_video`)."""
        path = resolve_inside(self.root, requested)
        if self.workspace.contains(path):
            raise PathRefused(f"{requested}: is the workspace's own folder; open a video from elsewhere")
        return self.open_video(path, name=video_name(path), source=str(path), replace=replace)

    def open_video(self, path: Path, *, name: str, source: str, replace: bool = False,
                   cleanup: Path | None = None) -> JobStatus:
        """Start decoding the video at ``path`` into the workspace, replacing its video.

        The input is checked first (:func:`~emvos.io.open_frames`). ``cleanup`` is a folder deleted
        when decoding ends (an upload). Raises :class:`WorkspaceOccupied` when the workspace holds
        a video and ``replace`` is false, :class:`~emvos.app.jobs.JobBusy` when a job runs.
        """
        try:
            if self.workspace.video is not None and not replace:
                raise WorkspaceOccupied(f"the workspace holds {self.workspace.video.name}; opening another video "
                                        "deletes its annotations and results")
            frames = open_frames(path)
            label = safe_name(name)

            def work(progress: Progress) -> str:
                try:
                    progress.update(total=frames.num_frames, message=f"decoding {label}")
                    video = self.workspace.import_frames(frames, label, source, on_frame=lambda _: progress.advance())
                finally:
                    if cleanup is not None:
                        shutil.rmtree(cleanup, ignore_errors=True)
                return f"opened {video.name}: {video.num_frames} frames, {video.width}x{video.height}"

            return self.jobs.start("open", work, f"decoding {label}")
        except BaseException:
            if cleanup is not None:
                shutil.rmtree(cleanup, ignore_errors=True)
            raise

    def propagate(self, start: int, direction: Direction) -> JobStatus:
        """Start propagating from frame ``start`` (see the module docstring for the semantics)."""
        video = self.workspace.require_video()
        self.workspace.check_index(start)
        replayed, segmented = propagation_plan(video.num_frames, self.workspace.annotated(), start, direction)

        def work(progress: Progress) -> str:
            progress.update(total=len(segmented), message="loading the model")
            predictor = self._predictor_or_error()
            anchor = segmented[0]
            plan = [*replayed, *segmented]
            masks = {index: mask for index in self.workspace.annotated() if index in plan
                     and (mask := self.workspace.read_annotation(index)) is not None}
            progress.update(message=f"replaying {len(replayed)} earlier annotation(s)" if replayed
                            else f"propagating {direction} from frame {anchor}")
            to_write = set(segmented)
            frames = _WorkspaceFrames(self.workspace, video.num_frames)
            state = predictor.init_state(probabilities=not predictor.cuda_graphs)  # CUDA graphs keep none
            for prediction in predictor.propagate(state, frames, masks, indices=plan):
                if prediction.index in to_write:
                    self.workspace.write_result(prediction.index, prediction.labels, prediction.object_ids,
                                                prediction.probabilities)
                    progress.advance()
                elif prediction.index == replayed[-1]:
                    progress.update(message=f"propagating {direction} from frame {anchor}")
                else:
                    progress.check()
            return f"propagated {direction} from frame {anchor}: {len(segmented)} frames"

        return self.jobs.start("propagate", work, f"propagating {direction}")

    def _predictor_or_error(self) -> VideoPredictor:
        with self._model_lock:
            if self._predictor is None:
                try:
                    self._predictor = self._load_predictor()
                except EmvosInputError as error:
                    self.model_error = str(error)
                    raise
                self.model_error = None
            return self._predictor

    def review(self) -> list[dict[str, Any]]:
        """The frames a person should check, as ``segment`` writes them in ``review.json``'s
        ``needs_review`` (:meth:`Workspace.review`); none before a video is open."""
        return self.workspace.review().needs_review if self.workspace.video is not None else []

    def export(self, formats: Sequence[str] = DEFAULT_EXPORT_FORMATS) -> JobStatus:
        """Start writing the exports: palette PNGs (DAVIS layout), the overlay mp4, the same masks in
        ``formats`` (of :data:`EXPORT_FORMATS`) and a zip of them all.

        ``exports/Annotations/<video>/<frame>.png`` holds each frame's result, else its annotation,
        else an empty mask; ``exports/<video>.mp4`` the masks drawn over the frames;
        ``exports/<format>/`` the masks in each format (:mod:`emvos.io.formats`; the soft formats
        hold the network's probabilities of each result, and 0 or 255 for an annotation);
        ``exports/<video>.zip`` all of them, as ``Annotations/<video>/...``, ``<video>.mp4`` and
        ``<format>/...``.

        Raises:
            EmvosInputError: an unknown format, or a soft format while a result has no probabilities.
        """
        video = self.workspace.require_video()
        unknown = [f for f in formats if f not in EXPORT_FORMATS]
        if unknown:
            raise EmvosInputError(f"cannot export {unknown[0]!r}; the formats are {', '.join(EXPORT_FORMATS)}")
        formats = [f for f in EXPORT_FORMATS if f in formats]
        soft = SOFT_FORMATS.intersection(formats)
        missing = self.workspace.results_without_probabilities() if soft else []
        if missing:
            raise EmvosInputError(f"{' and '.join(sorted(soft))} export the network's probabilities, which frame "
                                  f"{missing[0]}'s result was stored without; propagate again, or leave them out")
        out = self.workspace.exports_dir

        def work(progress: Progress) -> str:
            progress.update(total=video.num_frames, message="exporting")
            shutil.rmtree(out, ignore_errors=True)
            masks = out / "Annotations" / video.name
            movie = out / f"{video.name}.mp4"
            with LabelWriter(masks, DAVIS_PALETTE, "P") as labels_out, \
                    OverlayWriter(movie, video.fps, video.size) as overlay_out, \
                    contextlib.ExitStack() as stack:
                writers = {f: stack.enter_context(result_writer(f, out / f)) for f in formats}
                for index, frame_name in enumerate(video.frame_names):
                    labels = self.workspace.final_labels(index)
                    labels_out.write(frame_name, labels)
                    overlay_out.write(self.workspace.read_frame(index), labels)
                    ids = tuple(int(i) for i in np.unique(labels) if i)
                    soft_frame = self.workspace.final_probabilities(index, labels) if soft else None
                    for name, writer in writers.items():
                        if soft_frame is not None and name in SOFT_FORMATS:
                            writer.write(frame_name, labels, *soft_frame)
                        else:
                            writer.write(frame_name, labels, ids)
                    progress.advance()
            archive_path = out / f"{video.name}.zip"
            with atomic_file(archive_path) as stream, zipfile.ZipFile(stream, "w", zipfile.ZIP_STORED) as archive:
                for frame_name in video.frame_names:
                    archive.write(masks / f"{frame_name}.png", f"Annotations/{video.name}/{frame_name}.png")
                archive.write(movie, movie.name)
                for path in sorted(p for f in formats for p in (out / f).rglob("*") if p.is_file()):
                    archive.write(path, path.relative_to(out).as_posix())
            return f"exported {video.num_frames} frames: {archive_path.name}, {movie.name}"

        return self.jobs.start("export", work, "exporting")

    def import_mask(self, index: int, labels: np.ndarray) -> list[int]:
        """Make ``labels`` (checked against the frame size) frame ``index``'s annotation; returns its ids."""
        video = self.workspace.require_video()
        if labels.shape != video.size:
            raise EmvosInputError(f"the mask is {labels.shape[1]}x{labels.shape[0]} (width x height) but the frames "
                                  f"are {video.width}x{video.height}; resize it with nearest-neighbour interpolation")
        self.workspace.write_annotation(index, labels)
        return [int(value) for value in np.unique(labels) if value]
