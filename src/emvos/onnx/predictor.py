"""Segment videos with an exported model on onnxruntime: numpy and the ONNX graphs, no PyTorch.

:class:`OnnxPredictor` follows :class:`~emvos.inference.VideoPredictor` frame for frame: the same
working geometry, the first-frame and previous-frame references of every object, objects given at
later frames, and re-given objects taking the new frame as their reference. Its state is a handful
of numpy arrays whose size depends on the number of objects and the resolution, never on the length
of the video.

The first-frame references of objects given at different frames sit side by side in one reference
whose mask is zero, for each object, outside its own frame's pixels. Matching takes, for every query
pixel, the maximum over reference pixels of a non-negative affinity times the mask, and each row's
affinity depends on that row alone, so the zero columns change nothing: the scores are those of
matching each frame's objects against their own frame.

Example (a labelling tool's server needs only numpy, Pillow and onnxruntime)::

    predictor = OnnxPredictor.from_onnx("emvos-onnx")     # a folder of `emvos export --onnx`
    state = predictor.init_state()
    first = predictor.step(state, frames[0], mask)         # (H, W) uint8 object ids
    for frame in frames[1:]:
        labels = predictor.step(state, frame).labels
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from emvos.errors import ParameterError
from emvos.inference.frames import (
    Direction,
    FramePrediction,
    ImageLike,
    MaskLike,
    as_image,
    as_labels,
    propagate_frames,
)
from emvos.inference.geometry import Geometry
from emvos.inference.settings import DEFAULT_RESOLUTION
from emvos.onnx.files import OnnxModel, cached_onnx_folder, read_onnx_folder


@dataclass
class OnnxState:
    """Memory of one video. Create with :meth:`OnnxPredictor.init_state`.

    Attributes:
        object_ids: user ids in slot order.
        next_index: index of the next frame to process.
        first_keys: per branch, ``(1, C, Nf)`` keys of the frames objects were given at, side by side.
        first_mask: ``(1, O, 2, Nf)`` each object's background/foreground at those pixels (0 elsewhere).
        prev_keys: per branch, ``(1, C, N)`` keys of the previous frame.
        prev_mask: ``(1, O, 2, N)`` the previous frame's probabilities at stride 16.
        adaptations: as :attr:`VideoState.adaptations`, always empty (no test-time adaptation).
    """

    frames: Iterable[ImageLike] | None = None
    geometry: Geometry | None = None
    object_ids: list[int] = field(default_factory=list)
    first_keys: dict[str, np.ndarray] = field(default_factory=dict)
    first_mask: np.ndarray | None = None
    prev_keys: dict[str, np.ndarray] = field(default_factory=dict)
    prev_mask: np.ndarray | None = None
    pending: dict[int, np.ndarray] = field(default_factory=dict)
    next_index: int = 0
    adaptations: list[object] = field(default_factory=list)  # always empty: the exported network does not adapt


def _nearest_indices(size_in: int, size_out: int) -> np.ndarray:
    """Source index of each output index of PyTorch's ``nearest`` resize (float32 scale, floor)."""
    if size_in == size_out:
        return np.arange(size_out)
    scale = np.float32(size_in) / np.float32(size_out)
    return np.minimum(np.floor(np.arange(size_out, dtype=np.float32) * scale).astype(np.int64), size_in - 1)


class OnnxPredictor:
    """Segments videos with the ONNX graphs of ``emvos export --onnx``, one frame at a time.

    Args:
        model: the exported folder (or its :class:`~emvos.onnx.files.OnnxModel`).
        resolution: shorter side the frames are resized to (0 keeps their size).
        threads: onnxruntime's intra-op threads (``None``: its default, one per core).
    """

    #: Frames a caller's loop hands over at a time (as :attr:`VideoPredictor.lookahead`).
    lookahead = 1

    def __init__(self, model: OnnxModel | str | os.PathLike[str], resolution: int = DEFAULT_RESOLUTION,
                 threads: int | None = None) -> None:
        if resolution < 0:
            raise ParameterError("resolution", f"must be 0 (keep) or a positive shorter side, got {resolution}")
        if threads is not None and threads < 1:
            raise ParameterError("threads", f"must be at least 1, got {threads}")
        self.model = model if isinstance(model, OnnxModel) else read_onnx_folder(model)
        self.resolution = resolution
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._encoder, self._step, self._finish = (
            ort.InferenceSession(str(self.model.graph(name)), options, providers=["CPUExecutionProvider"])
            for name in ("encoder.onnx", "step.onnx", "finish.onnx"))
        self._keys = [f"key_{b}" for b in self.model.branches]

    @classmethod
    def from_onnx(cls, folder: str | os.PathLike[str], **kwargs: object) -> OnnxPredictor:
        """A predictor on the graphs of ``folder`` (written by ``emvos export --onnx``)."""
        return cls(read_onnx_folder(folder), **kwargs)

    @classmethod
    def from_checkpoint(cls, checkpoint: str | os.PathLike[str] | None = None, **kwargs: object) -> OnnxPredictor:
        """A predictor on the cached export of ``checkpoint`` (``None``: the shipped model), exported
        on first use in a child process (:func:`~emvos.onnx.files.cached_onnx_folder`)."""
        return cls(cached_onnx_folder(checkpoint), **kwargs)

    # -- state ----------------------------------------------------------------------------------
    def init_state(self, frames: Iterable[ImageLike] | None = None, *, probabilities: bool = False) -> OnnxState:
        """A fresh state for a new video; ``frames`` is only needed for :meth:`propagate`.

        ``probabilities`` (as :meth:`VideoPredictor.init_state`) is not available: the exported
        graphs return labels.
        """
        if probabilities:
            raise ParameterError("probabilities", "are not available from the onnxruntime backend (its graphs "
                                                  "return labels); leave it out or use VideoPredictor")
        return OnnxState(frames=frames)

    def add_mask(self, state: OnnxState, frame_index: int, mask: MaskLike) -> list[int]:
        """Give the objects of ``mask`` (``(H, W)`` ids) at frame ``frame_index``, not yet processed.

        Returns the ids found in the mask.
        """
        if frame_index < state.next_index:
            raise ValueError(f"frame_index: frame {frame_index} was already processed (next frame is "
                             f"{state.next_index}); start a new state to re-segment from an earlier frame")
        labels = as_labels(mask)
        state.pending[frame_index] = labels
        return [int(i) for i in np.unique(labels) if i != 0]

    # -- inference ------------------------------------------------------------------------------
    def propagate(self, state: OnnxState, frames: Iterable[ImageLike] | None = None,
                  masks: Mapping[int, MaskLike] | None = None, *, direction: Direction = "forward",
                  indices: Iterable[int] | None = None,
                  on_frame: Callable[[FramePrediction, float], None] | None = None) -> Iterator[FramePrediction]:
        """Segment a video's frames one after another, as :meth:`VideoPredictor.propagate` (the same
        loop, :func:`emvos.inference.frames.propagate_frames`, and the same arguments): ``frames`` in
        video order (``None``: those given to :meth:`init_state`), ``masks`` by frame index (and those
        added with :meth:`add_mask`), ``direction`` ``forward`` or ``backward``, or ``indices`` in
        the order to segment, and ``on_frame(prediction, seconds)`` called before each is yielded.

        Raises:
            ValueError: no frames, an unknown ``direction``, ``direction`` and ``indices`` both
                given, or ``frames`` that cannot be indexed where they must be.
        """
        return propagate_frames(self, state, frames, masks, direction=direction, indices=indices,
                                on_frame=on_frame)

    def step(self, state: OnnxState, image: ImageLike, mask: MaskLike | None = None) -> FramePrediction:
        """Segment the next frame: ``image`` ``(H, W, 3) uint8`` RGB, ``mask`` optional ``(H, W)`` ids
        given at this frame. The given mask's objects are returned exactly as given."""
        return self.step_many(state, [image], [mask])[0]

    def step_many(self, state: OnnxState, images: Sequence[ImageLike],
                  masks: Sequence[MaskLike | None] | None = None) -> list[FramePrediction]:
        """Segment the next ``len(images)`` frames, in order (one :meth:`step` each).

        Raises:
            ValueError: a frame or mask of another size than the video's, or ``masks`` of another length.
        """
        masks = [None] * len(images) if masks is None else list(masks)
        if len(masks) != len(images):
            raise ValueError(f"masks: {len(images)} frames but {len(masks)} masks; pass one mask or None per frame")
        predictions = []
        for image, mask in zip(images, masks, strict=True):
            frame = as_image(image)
            given = None if mask is None else as_labels(mask)
            if state.geometry is None:
                state.geometry = Geometry.for_frames(frame.shape[:2], self.resolution, self.model.stride)
            size = state.geometry.size
            if frame.shape[:2] != size or (given is not None and given.shape != size):
                raise ValueError(f"images: frame {state.next_index}: frame {frame.shape[:2]} / mask "
                                 f"{None if given is None else given.shape} differ from the video's size {size}")
            ids = [] if given is None else [int(i) for i in np.unique(given) if i != 0]
            if not state.object_ids and not ids:  # nothing to track yet
                labels = np.zeros(size, np.uint8)
            else:
                query = self._embed(state.geometry, frame)
                probs = self._predict(state, query)
                if ids:
                    probs = self._add_given(state, query, given, ids, probs)
                labels = self._finish_frame(state, query, probs)
                if given is not None:
                    labels = np.where(given != 0, given, labels)
            predictions.append(FramePrediction(state.next_index, labels, tuple(state.object_ids)))
            state.next_index += 1
        return predictions

    def _embed(self, geometry: Geometry, frame: np.ndarray) -> dict[str, np.ndarray]:
        """The frame's decoder maps and keys, by the graphs' names."""
        left, right, top, bottom = geometry.pad
        feeds = {"frame": frame, "sizes": np.array([1, 3, *geometry.work], np.int64),
                 "pads": np.array([0, 0, top, left, 0, 0, bottom, right], np.int64)}
        names = [o.name for o in self._encoder.get_outputs()]
        return dict(zip(names, self._encoder.run(None, feeds), strict=True))

    def _predict(self, state: OnnxState, query: dict[str, np.ndarray]) -> np.ndarray | None:
        """``(O, 2, H'', W'')`` background/foreground probabilities of every tracked object."""
        if not state.object_ids:
            return None
        feeds = {name: query[name] for name in ("shared16", "shared8", "shared4", *self._keys)}
        feeds.update({f"first_{k}": state.first_keys[k] for k in self._keys})
        feeds.update({f"prev_{k}": state.prev_keys[k] for k in self._keys})
        feeds.update(first_mask=state.first_mask, prev_mask=state.prev_mask)
        return self._step.run(None, feeds)[0]

    def _given_map(self, geometry: Geometry, given: np.ndarray) -> np.ndarray:
        """``(H, W)`` ids -> ``(H'', W'')``: PyTorch's nearest resize to the working size, reflect padding."""
        if geometry.resized:
            given = given[_nearest_indices(geometry.size[0], geometry.work[0])[:, None],
                          _nearest_indices(geometry.size[1], geometry.work[1])[None, :]]
        left, right, top, bottom = geometry.pad
        return np.pad(given, ((top, bottom), (left, right)), mode="reflect")

    def _add_given(self, state: OnnxState, query: dict[str, np.ndarray], given: np.ndarray, given_ids: list[int],
                   probs: np.ndarray | None) -> np.ndarray:
        """Register the objects of a given mask; return every object's ``(O, 2, H'', W'')`` probabilities."""
        stride = self.model.stride
        given_map = self._given_map(state.geometry, given)
        fg = (given_map[None] == np.array(given_ids, np.uint8)[:, None, None]).astype(np.float32)
        one_hot = np.stack([1 - fg, fg], axis=1)  # (G, 2, H'', W'')
        g, _, hp, wp = one_hot.shape
        mask16 = one_hot.reshape(g, 2, hp // stride, stride, wp // stride, stride).mean(axis=(3, 5))
        mask16 = mask16.reshape(1, g, 2, -1)
        n = mask16.shape[-1]
        old = 0 if state.first_mask is None else state.first_mask.shape[-1]
        rows = [] if probs is None else list(probs)
        first_rows = [] if state.first_mask is None else list(state.first_mask[0])
        first_rows = [np.concatenate([r, np.zeros((2, n), np.float32)], axis=1) for r in first_rows]
        for j, oid in enumerate(given_ids):
            row = np.concatenate([np.zeros((2, old), np.float32), mask16[0, j]], axis=1)
            if oid in state.object_ids:  # a re-given object leaves its old reference
                slot = state.object_ids.index(oid)
                rows[slot], first_rows[slot] = one_hot[j], row
            else:
                state.object_ids.append(oid)
                rows.append(one_hot[j])
                first_rows.append(row)
        first_mask = np.stack(first_rows)[None]
        keys = {k: query[k] if not state.first_keys else np.concatenate([state.first_keys[k], query[k]], axis=2)
                for k in self._keys}
        used = first_mask.any(axis=(0, 1, 2))  # reference pixels no object uses any more are dropped
        state.first_mask = np.ascontiguousarray(first_mask[..., used])
        state.first_keys = {k: np.ascontiguousarray(v[..., used]) for k, v in keys.items()}
        return np.stack(rows)

    def _finish_frame(self, state: OnnxState, query: dict[str, np.ndarray], probs: np.ndarray) -> np.ndarray:
        """Aggregate, keep the frame as the next one's reference, and return its ``(H, W) uint8`` user ids."""
        left, right, top, bottom = state.geometry.pad
        hp, wp = state.geometry.padded
        feeds = {"probs": probs, "crop_starts": np.array([top, left], np.int64),
                 "crop_ends": np.array([hp - bottom, wp - right], np.int64),
                 "size": np.array(state.geometry.size, np.int64)}
        slots, state.prev_mask = self._finish.run(["labels", "prev_mask"], feeds)
        state.prev_keys = {k: query[k] for k in self._keys}
        lut = np.array([0, *state.object_ids], np.uint8)
        return lut[slots]
