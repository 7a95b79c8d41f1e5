"""Streaming inference on a video: :class:`VideoPredictor` and its per-video :class:`VideoState`.

The predictor owns the network and the inference options; a state holds one video's memory:
the first-frame references of its objects and the previous frame. Memory depends on the number
of objects and the resolution, never on the length of the video.

User object ids (1..255, gaps allowed) are kept apart from tensor slots: ``state.object_ids[i]``
is the id of slot ``i``, and outputs carry the user's ids.

Example::

    predictor = VideoPredictor.from_checkpoint("emvos.pt")
    state = predictor.init_state(frames)          # any iterable of (H, W, 3) uint8 RGB frames
    predictor.add_mask(state, 0, first_mask)      # (H, W) uint8 object ids
    predictor.add_mask(state, 40, later_mask)     # objects that appear later
    for pred in predictor.propagate(state):   # or propagate(state, frames, {0: first_mask, 40: later_mask})
        save(pred.index, pred.labels)
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from emvos.errors import EmvosInputError, ParameterError
from emvos.inference.adapt import AdaptReport, AdaptSettings, adapt_network
from emvos.inference.aggregate import aggregate
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
from emvos.inference.graph import StaticGraph
from emvos.inference.optimize import prepare_for_inference
from emvos.inference.reach import within_reach
from emvos.inference.settings import (
    DEFAULT_REACH,
    DEFAULT_RESOLUTION,
    PRECISIONS,
    SHIPPED_MODELS,
    check_checkpoint,
    checkpoint_file,
)
from emvos.inference.zoom import DEFAULT_ZOOM, Window, ZoomSettings, merge_windows, outgrown, zoom_window
from emvos.model.checkpoint import load_model, read_checkpoint
from emvos.model.config import Bijective
from emvos.model.encoders.base import Features
from emvos.model.matching import downsample_mask
from emvos.model.network import EMVOS, FrameEmbedding, Reference

#: The autocast dtype of each ``precision`` (``None``: no autocast).
AUTOCAST_DTYPES: dict[str, torch.dtype | None] = dict(zip(PRECISIONS, (None, torch.bfloat16, torch.float16),
                                                         strict=True))
#: Dtypes whose logits are upcast to float32 before the softmax.
LOW_PRECISIONS = (torch.bfloat16, torch.float16)
T = TypeVar("T")


@dataclass
class _Group:
    """Objects that share a first-frame reference (they were given at the same frame)."""

    object_ids: list[int]
    ref: Reference  # keys (1, C, N); mask (1, len(object_ids), 2, N)


@dataclass
class _ZoomTrack:
    """A small object followed in a zoomed window of its own (:mod:`emvos.inference.zoom`)."""

    window: Window
    state: VideoState  # the window's video: the object's references, in the window's pixels


@dataclass
class VideoState:
    """Memory of one video. Create with :meth:`VideoPredictor.init_state`.

    Attributes:
        object_ids: user ids in slot order.
        next_index: index of the next frame :meth:`VideoPredictor.step` will process.
    """

    frames: Iterable[ImageLike] | None = None
    geometry: Geometry | None = None
    object_ids: list[int] = field(default_factory=list)
    groups: list[_Group] = field(default_factory=list)
    prev: Reference | None = None
    pending: dict[int, np.ndarray] = field(default_factory=dict)
    next_index: int = 0
    slot_order: Tensor | None = None  # slot order of the groups' concatenated objects; None: already in order
    lut: Tensor | None = None  # (1 + O,) uint8: 0 then the user id of each slot
    graph: StaticGraph | None = None  # the propagated frame's CUDA graph, with --cuda-graphs
    embed_graphs: dict[int, StaticGraph] = field(default_factory=dict)  # the encoder's, per number of frames
    network: EMVOS | None = None  # this video's adapted network (prepared); None: the predictor's
    tuned: EMVOS | None = None  # the same before preparation, where adapting again starts
    adaptations: list[AdaptReport] = field(default_factory=list)  # what each adaptation did, in order
    probabilities: list[Tensor] | None = None  # when kept: the current chunk's (O, H, W) uint8 probabilities
    zoom: dict[int, _ZoomTrack] = field(default_factory=dict)  # object id -> its window, for small objects


def load_network(checkpoint: str | Path | None = None) -> EMVOS:
    """The network of an emvos or official EMVOS checkpoint, of a shipped model by name (``emvos-lite``,
    ``emvos-base``), or of the default shipped model (``None``)."""
    path = checkpoint_file(checkpoint)
    if (checkpoint is None or str(checkpoint) in SHIPPED_MODELS) and not path.is_file():
        name = "trained model" if checkpoint is None else f"{checkpoint} model"
        raise ParameterError("checkpoint", f"this emvos install ships no {name}; pass an emvos checkpoint or "
                                           "the official EMVOS weights")
    check_checkpoint(checkpoint)
    return load_model(path)


def adapt_settings(checkpoint: str | Path | None = None, steps: int | None = None,
                   overrides: Mapping[str, Any] | None = None) -> AdaptSettings | None:
    """The test-time adaptation a checkpoint's network gets by default.

    :class:`AdaptSettings`' defaults, with the settings the model file recommends (its ``adapt``
    entry: e.g. ``emvos-base``'s learning rate), then ``overrides`` (fields by name, as plain data:
    an ablation's settings), then ``steps`` optimizer steps (``None``: the number so far; 0: no
    adaptation). ``None`` is returned when the steps come to 0. ``checkpoint`` is read as
    :func:`load_network` reads it.

    Raises:
        EmvosInputError: the file's ``adapt`` entry names a setting :class:`AdaptSettings` does not have.
        ValueError: ``overrides`` name a setting it does not have, or a value out of range.
    """
    if steps == 0:
        return None
    path = checkpoint_file(checkpoint)
    recommended = dict(read_checkpoint(path).get("adapt") or {}) if path.is_file() else {}
    try:
        settings = AdaptSettings.from_dict(recommended)
    except ValueError as exc:
        raise EmvosInputError(f"{path}: its {exc}; upgrade emvos or write the file again with emvos export") from None
    if overrides:
        settings = AdaptSettings.from_dict(dataclasses.asdict(settings) | dict(overrides))
    if steps is not None:
        settings = dataclasses.replace(settings, steps=steps)
    return settings if settings.steps > 0 else None


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else as given."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _embedding_tensors(embedding: FrameEmbedding) -> list[Tensor]:
    """An embedding as a flat list of tensors: its three decoder maps, then its keys in branch order."""
    return [*embedding.shared, *embedding.keys.values()]


def _embedding_from_tensors(tensors: Sequence[Tensor], branches: Sequence[str]) -> FrameEmbedding:
    """The inverse of :func:`_embedding_tensors` (the stride-16 grid is the first map's size)."""
    shared = (tensors[0], tensors[1], tensors[2])
    height, width = tensors[0].shape[-2:]
    return FrameEmbedding(shared, dict(zip(branches, tensors[3:], strict=True)), (height, width))


def _reference_tensors(ref: Reference) -> list[Tensor]:
    """A reference as a flat list of tensors: its mask, then its keys in branch order."""
    return [ref.mask, *ref.keys.values()]


def _reference_from_tensors(tensors: Sequence[Tensor], branches: Sequence[str]) -> Reference:
    """The inverse of :func:`_reference_tensors`."""
    return Reference(dict(zip(branches, tensors[1:], strict=True)), tensors[0])


def _known(value: T | None, what: str) -> T:
    """``value``, which the video's state sets before it is needed; ``None`` would be a bug in emvos."""
    if value is None:
        raise RuntimeError(f"the video's {what} is not known yet")
    return value


class VideoPredictor:
    """Segments videos with an :class:`EMVOS` network, one frame at a time.

    Args:
        model: the network (moved to ``device`` and put in evaluation mode).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ...
        resolution: shorter side the frames are resized to (0 keeps their size).
        bijective: replace surjective matching with a bijective variant at test time; requires a
            network with the ``sm`` branch.
        precision: ``fp32``; or ``bf16`` (CPU or CUDA) / ``fp16`` (CUDA) autocast, faster where the
            hardware supports it, at a small cost in accuracy.
        optimize: run a copy of the network prepared for inference
            (:func:`emvos.inference.optimize.prepare_for_inference`): BatchNorm folded into the
            convolutions before it, and channels-last memory format (same results up to float
            rounding).
        compile: also compile the encoder and decoder with ``torch.compile`` (slow first frames of
            each resolution and object count, faster afterwards; on the CPU with Inductor's
            freezing, which pre-packs the weights for its convolution kernels). Raises PyTorch's
            process-wide limit of compiled shapes (:func:`emvos.runtime.allow_compiled_shapes`).
        cuda_graphs: on CUDA, replay each propagated frame's work from a CUDA graph captured for the
            video (again whenever objects are given): one launch per frame instead of about a thousand
            operations, the same kernels and results. The capture costs about three frames' time.
            The encoder of each chunk of :attr:`lookahead` frames is a graph of its own.
        lookahead: frames :meth:`propagate` reads ahead and encodes as one batch (see
            :meth:`step_many`). On a GPU, one frame of a video leaves most of it idle; a batch of
            frames fills it. Memory grows with it; results are the same (up to float rounding).
        adapt: test-time adaptation: at the first frame of each video that is given a mask, a copy
            of the network's keys and decoder is fine-tuned on pseudo-videos of that frame
            (:mod:`emvos.inference.adapt`) and segments that video; with ``adapt.again``, each later
            frame given a mask (new objects, a correction) tunes its decoder again on that frame's
            labels. ``None`` (or 0 steps) uses the network as it is.
        zoom: small objects are also tracked in a zoomed window of the frame each
            (:mod:`emvos.inference.zoom`): one more encoder pass of ``zoom.size`` pixels a side per
            small object and frame. ``None``: the frame's pass alone.
        reach: each object's foreground is kept within its previous-frame box enlarged by ``reach``
            times the box's longer side (:mod:`emvos.inference.reach`), so that it cannot jump to a
            look-alike across the frame; a lost object is looked for everywhere. ``None``: everywhere.
    """

    def __init__(self, model: EMVOS, device: str | torch.device = "auto", resolution: int = DEFAULT_RESOLUTION,
                 bijective: Bijective | None = None, precision: str = "fp32", optimize: bool = True,
                 compile: bool = False, cuda_graphs: bool = False, lookahead: int = 1,
                 adapt: AdaptSettings | None = None, zoom: ZoomSettings | None = None,
                 reach: float | None = None) -> None:
        if bijective is not None and "sm" not in model.config.branches:
            raise ParameterError("bijective", f"matching replaces surjective matching, but this model has only the "
                                              f"{model.config.matching} branch; use a model trained with sm")
        if resolution < 0:
            raise ParameterError("resolution", f"must be 0 (keep) or a positive shorter side, got {resolution}")
        if precision not in AUTOCAST_DTYPES:
            raise ParameterError("precision", f"must be one of {', '.join(AUTOCAST_DTYPES)}, got {precision!r}")
        self.device = resolve_device(device)
        if precision == "fp16" and self.device.type != "cuda":
            raise ParameterError("precision", "fp16 needs a CUDA device; use bf16 on the CPU")
        if cuda_graphs and self.device.type != "cuda":
            raise ParameterError("cuda_graphs", f"needs a CUDA device, not {self.device}; leave it out on the CPU")
        if lookahead < 1:
            raise ParameterError("lookahead", f"must be at least 1 frame, got {lookahead}")
        if cuda_graphs and compile:
            raise ParameterError(("cuda_graphs", "compile"), "both take over the frame's launches; choose one")
        if zoom is not None and cuda_graphs:
            raise ParameterError(("zoom", "cuda_graphs"), "cannot be combined: a CUDA graph replays the frame's "
                                                          "pass alone; leave out one of them")
        if reach is not None and not 0 < reach < float("inf"):
            raise ParameterError("reach", f"must be a positive share of an object's size (None: everywhere), "
                                          f"got {reach}")
        if zoom is not None and zoom.size % model.stride:
            raise ParameterError("zoom", f"the window's size must be a multiple of the network's stride "
                                         f"{model.stride}, got {zoom.size}")
        model = model.to(self.device).eval()
        self.reference = model  # the caller's network: what adaptation starts from
        self.optimize, self.compile = optimize, compile
        self.model = prepare_for_inference(model, self.device, optimize=optimize, compile=compile)
        self.memory_format = torch.channels_last if optimize else torch.contiguous_format
        self.autocast_dtype = AUTOCAST_DTYPES[precision]
        self.resolution = resolution
        self.bijective = bijective
        self.cuda_graphs = cuda_graphs
        self.lookahead = lookahead
        self.adapt = adapt if adapt is not None and adapt.steps > 0 else None
        self.zoom = zoom
        self.reach = reach

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path | None = None, device: str | torch.device = "auto",
                        adapt: AdaptSettings | Literal["model"] | None = "model",
                        zoom: ZoomSettings | None = DEFAULT_ZOOM, reach: float | None = DEFAULT_REACH,
                        **kwargs: Any) -> VideoPredictor:
        """Load a checkpoint (emvos or official EMVOS), a shipped model by name (``emvos-lite``,
        ``emvos-base``), or the default shipped model (``None``).

        Adapts to each video's first mask, zooms on small objects and looks for each object near
        where it was as ``emvos segment`` does: ``adapt="model"`` with the settings the model file
        recommends (:func:`adapt_settings`), ``None`` not at all; ``zoom=None`` for the frame's pass
        alone; ``reach=None`` to look everywhere. The other keyword arguments are the constructor's.
        """
        settings = adapt_settings(checkpoint) if adapt == "model" else adapt
        return cls(load_network(checkpoint), device=device, adapt=settings, zoom=zoom, reach=reach, **kwargs)

    # -- state ----------------------------------------------------------------------------------
    def init_state(self, frames: Iterable[ImageLike] | None = None, *, probabilities: bool = False) -> VideoState:
        """A fresh state for a new video; ``frames`` is only needed for :meth:`propagate`.

        With ``probabilities``, every prediction carries its objects' probabilities
        (:attr:`FramePrediction.probabilities`; not with ``cuda_graphs``).
        """
        if probabilities and self.cuda_graphs:
            raise ParameterError(("probabilities", "cuda_graphs"), "cannot be combined: a CUDA graph's frames keep "
                                                                   "no probabilities; leave out one of them")
        return VideoState(frames=frames, probabilities=[] if probabilities else None)

    def add_mask(self, state: VideoState, frame_index: int, mask: MaskLike) -> list[int]:
        """Give the objects of ``mask`` at frame ``frame_index`` (not yet processed).

        New ids become new objects from that frame on; ids already tracked take this frame as their
        new reference. Returns the ids found in the mask.
        """
        if frame_index < state.next_index:
            raise ValueError(f"frame {frame_index} was already processed (next frame is {state.next_index}); "
                             "start a new state to re-segment from an earlier frame")
        labels = as_labels(mask)
        state.pending[frame_index] = labels
        return [int(i) for i in np.unique(labels) if i != 0]

    # -- inference ------------------------------------------------------------------------------
    def propagate(self, state: VideoState, frames: Iterable[ImageLike] | None = None,
                  masks: Mapping[int, MaskLike] | None = None, *, direction: Direction = "forward",
                  indices: Iterable[int] | None = None,
                  on_frame: Callable[[FramePrediction, float], None] | None = None) -> Iterator[FramePrediction]:
        """Segment a video's frames one after another: the one per-frame loop of every command.

        Frames are read :attr:`lookahead` at a time and segmented by :meth:`step_many`; the masks
        are the same as stepping frame by frame in that order.

        Args:
            state: the video's state (updated in place).
            frames: ``(H, W, 3) uint8`` RGB frames (or PIL images) in video order; ``None``: those
                given to :meth:`init_state`. Read lazily when segmented forward; backward or over
                chosen ``indices``, a sequence (``len`` and indexing).
            masks: ``(H, W)`` object ids given at some frames, by frame index (masks added with
                :meth:`add_mask` count as given at their index too).
            direction: ``forward`` (first to last frame) or ``backward`` (last to first: the
                predictor sees the reversed video).
            indices: the frames to segment, in this order, instead of ``direction``'s (e.g. a few
                annotated frames replayed before a stretch of the video).
            on_frame: called with each prediction, before it is yielded, and the model's seconds
                spent on it (its chunk's time, measured after the device finished, shared among the
                chunk's frames that had objects; 0 for the others). It may raise to stop the loop.

        Yields:
            One prediction per frame, in processing order; :attr:`FramePrediction.index` is the
            frame's index in ``frames``.

        Raises:
            ValueError: no frames, an unknown ``direction``, ``direction`` and ``indices`` both
                given, or ``frames`` that cannot be indexed where they must be.
        """
        timed_on_gpu = on_frame is not None and self.device.type == "cuda"
        wait = (lambda: torch.cuda.synchronize(self.device)) if timed_on_gpu else None
        return propagate_frames(self, state, frames, masks, direction=direction, indices=indices,
                                on_frame=on_frame, wait=wait)

    def step(self, state: VideoState, image: ImageLike, mask: MaskLike | None = None) -> FramePrediction:
        """Segment the next frame of the video.

        Args:
            state: the video's state (updated in place).
            image: ``(H, W, 3) uint8`` RGB frame (or a PIL image).
            mask: optional ``(H, W)`` object ids given at this frame.

        Returns:
            The frame's labels, with the given mask's objects exactly as given.
        """
        return self.step_many(state, [image], [mask])[0]

    @torch.inference_mode()
    def set_previous(self, state: VideoState, image: ImageLike, labels: MaskLike) -> None:
        """Take ``labels`` as the prediction of the frame just before the next one, to resume a run
        from the labels it wrote (the objects' references must be given again first, with :meth:`step`
        at their frames). The network's own previous frame is soft (probabilities), ``labels`` are
        hard, so what follows can differ slightly from an uninterrupted run.

        Args:
            state: the video's state, its objects already given.
            image: ``(H, W, 3) uint8`` RGB frame.
            labels: ``(H, W)`` object ids predicted at that frame.
        """
        frame, labels = as_image(image), as_labels(labels)
        if state.geometry is None:
            state.geometry = Geometry.for_frames(frame.shape[:2], self.resolution, self.model.stride)
        if not state.object_ids:
            return
        query = self._embed_many(state, [frame])[0]
        given = state.geometry.mask(torch.from_numpy(labels).to(self.device)[None, None].float())[0, 0]
        ids = torch.tensor(state.object_ids, device=self.device, dtype=given.dtype).view(-1, 1, 1)
        fg = (given[None] == ids).to(given.dtype)
        prev_mask = downsample_mask(torch.stack([1 - fg, fg], dim=1), self.model.stride)
        state.prev = Reference(self._kept_keys(query), prev_mask.flatten(2)[None])
        state.graph = None
        if state.zoom:
            size = _known(self.zoom, "zoom").size
            labels_map = torch.from_numpy(labels).to(self.device)[None].float()
            for oid, track in state.zoom.items():  # centred on the labels
                track.window.follow(track.window.crop((labels_map == oid).float(), size, mode="nearest")[0])
            queries = self._embed_windows(state, self._pixels(frame), [t.window for t in state.zoom.values()])
            for track, query in zip(state.zoom.values(), queries, strict=True):
                window_labels = track.window.crop(labels_map, size, mode="nearest")  # (1, S, S)
                ids = torch.tensor(track.state.object_ids, device=self.device).view(-1, 1, 1)
                track.state.prev = self._reference(query, (window_labels == ids).float())

    @torch.inference_mode()
    def step_many(self, state: VideoState, images: Sequence[ImageLike],
                  masks: Sequence[MaskLike | None] | None = None) -> list[FramePrediction]:
        """Segment the next ``len(images)`` frames of the video, in order.

        What does not depend on masks (the encoder, the key projections and the decoder's
        object-independent part) runs on the frames as one batch; matching and decoding then go
        frame by frame, each from the previous frame's prediction. The results are those of
        :meth:`step` on each frame (up to float rounding).

        Args:
            state: the video's state (updated in place).
            images: ``(H, W, 3) uint8`` RGB frames (or PIL images).
            masks: for each frame, ``(H, W)`` object ids given at that frame, or ``None``.

        Returns:
            One prediction per frame; given masks' objects exactly as given.

        Raises:
            ValueError: a frame or mask of another size than the video's, or ``masks`` of another length.
        """
        masks = [None] * len(images) if masks is None else list(masks)
        if len(masks) != len(images):
            raise ValueError(f"{len(images)} frames but {len(masks)} masks; pass one mask or None per frame")
        frames = [as_image(image) for image in images]
        givens = [None if mask is None else as_labels(mask) for mask in masks]
        for i, (frame, given) in enumerate(zip(frames, givens, strict=True)):
            size = frame.shape[:2]
            if state.geometry is None:
                state.geometry = Geometry.for_frames(size, self.resolution, self.model.stride)
            if size != state.geometry.size or (given is not None and given.shape != size):
                raise ValueError(f"frame {state.next_index + i}: frame {size} / mask "
                                 f"{None if given is None else given.shape} differ from the video's size "
                                 f"{state.geometry.size}")
        given_ids = [[] if given is None else [int(i) for i in np.unique(given) if i != 0] for given in givens]
        # Frames before the first object need no work; all from the first given object on do.
        first = 0 if state.object_ids else next((i for i, ids in enumerate(given_ids) if ids), len(frames))
        if self.adapt is not None and len(frames) > 1 and any(given_ids):
            # Adapting changes the network at frames given a mask: take such chunks a frame at a time.
            return [prediction for frame, given in zip(frames, givens, strict=True)
                    for prediction in self.step_many(state, [frame], [given])]
        has_mask = bool(given_ids and given_ids[0])
        given = givens[0] if has_mask else None
        adapt_first = False
        if self.adapt is not None and state.tuned is None and given is not None:
            self._adapt(state, frames[0], given, self.reference, self.adapt)
            adapt_first = True
        predictions = [FramePrediction(state.next_index + i, np.zeros(_known(state.geometry, "size").size, np.uint8),
                                       ()) for i in range(first)]
        state.next_index += first
        queries = self._embed_many(state, frames[first:]) if first < len(frames) else []
        tracked: list[Tensor] = []  # each frame's labels on the device, fetched together: one wait per chunk
        objects: list[tuple[int, ...]] = []
        for frame, query, given, ids in zip(frames[first:], queries, givens[first:], given_ids[first:], strict=True):
            if ids and given is not None:
                labels = self._step_given(state, query, given, ids, frame)
            elif self.cuda_graphs:
                labels = self._step_graphed(state, query).clone()  # the graph's buffer is the next frame's
            else:
                labels, state.prev = self._track(state, query, _known(state.prev, "previous frame"), frame)
            tracked.append(labels)
            objects.append(tuple(state.object_ids))
        fetched = list(torch.stack(tracked).cpu().numpy()) if tracked else []
        kept: list[np.ndarray | None] = [None] * len(fetched)
        if state.probabilities is not None:
            kept, state.probabilities = [p.cpu().numpy() for p in state.probabilities], []
        for frame_labels, given, object_ids, probs in zip(fetched, givens[first:], objects, kept, strict=True):
            if given is not None:
                frame_labels = np.where(given != 0, given, frame_labels)
            predictions.append(FramePrediction(state.next_index, frame_labels, object_ids, probs))
            state.next_index += 1
        if self.adapt is not None and self.adapt.again and has_mask and not adapt_first and state.tuned is not None:
            # A later mask (new objects, or a correction): the decoder adapts again, keys kept, so that
            # the references already taken stay valid.
            self._adapt(state, frames[0], predictions[0].labels, state.tuned,
                        dataclasses.replace(self.adapt, keys=False))
        return predictions

    def _autocast(self) -> torch.autocast:
        # No cast cache: it would keep fp16/bf16 copies of the weights across a captured graph's boundary.
        return torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None,
                              cache_enabled=False)

    def _embed_many(self, state: VideoState, frames: list[np.ndarray]) -> list[FrameEmbedding]:
        """Encode ``K`` frames as one batch.

        With CUDA graphs, from the video's graph for a batch of ``K`` rounded up to a power of two
        (at most :attr:`lookahead`; the extra places hold copies of the last frame): a video's last,
        shorter chunk and single frames reuse a few graphs instead of capturing one per length.

        Returns:
            One embedding per frame (views of the batch's tensors, or of the graph's output buffers,
            valid until the next call).
        """
        pixels = torch.from_numpy(np.stack(frames))  # (K, H, W, 3) uint8
        network = state.network or self.model
        if not self.cuda_graphs:
            batch = self._embed(network, _known(state.geometry, "size"), pixels.to(self.device))
        else:
            size = min(1 << (len(frames) - 1).bit_length(), self.lookahead)
            if size > len(frames):
                pixels = torch.cat([pixels, pixels[-1:].expand(size - len(frames), -1, -1, -1)])
            graph = state.embed_graphs.get(size)
            if graph is None:
                geometry = _known(state.geometry, "size")
                graph = state.embed_graphs[size] = StaticGraph(
                    lambda inputs: _embedding_tensors(self._embed(network, geometry, inputs[0])), [pixels], self.device)
            batch = _embedding_from_tensors(graph([pixels]), list(self.model.keys))
        s16, s8, s4 = batch.shared
        return [FrameEmbedding((s16[i:i + 1], s8[i:i + 1], s4[i:i + 1]), {b: k[i:i + 1] for b, k in batch.keys.items()},
                               batch.grid) for i in range(len(frames))]

    def _embed(self, network: EMVOS, geometry: Geometry, pixels: Tensor) -> FrameEmbedding:
        """Encode ``(K, H, W, 3) uint8`` frames on the device at the video's working geometry."""
        x = pixels.permute(0, 3, 1, 2).float().div_(255)
        with self._autocast():
            return network.embed(geometry.image(x).contiguous(memory_format=self.memory_format))

    def _adapt(self, state: VideoState, frame: np.ndarray, labels: np.ndarray, start: EMVOS,
               settings: AdaptSettings) -> None:
        """Adapt ``start`` to ``(H, W, 3) uint8`` ``frame`` and its ``(H, W)`` ids; the video's network from now on."""
        geometry = _known(state.geometry, "size")
        with torch.inference_mode(False), torch.enable_grad():  # step_many runs in inference mode
            pixels = torch.from_numpy(frame).to(self.device).permute(2, 0, 1)[None].float().div_(255)
            ids = torch.from_numpy(labels).to(self.device)[None, None].float()
            state.tuned, report = adapt_network(start, geometry.image(pixels)[0], geometry.mask(ids)[0, 0].long(),
                                                settings, encoder=None if self.compile else self._encode_frozen)
        state.network = prepare_for_inference(state.tuned, self.device, optimize=self.optimize, compile=self.compile)
        state.graph, state.embed_graphs = None, {}  # captured from the previous network
        state.adaptations.append(report)

    def _encode_frozen(self, images: Tensor) -> Features:
        """The frozen encoder's features of ``(N, 3, H, W)`` images by the prepared network, at the
        reference's precision (adaptation's variants; not when compiled, whose shapes are the frames')."""
        return self.model.encoder(images.contiguous(memory_format=self.memory_format))

    def _track(self, state: VideoState, query: FrameEmbedding, prev: Reference,
               frame: np.ndarray | None = None) -> tuple[Tensor, Reference]:
        """Propagate the tracked objects to a frame with no given mask.

        Args:
            query: the frame's embedding.
            prev: the previous frame's reference.
            frame: the ``(H, W, 3) uint8`` frame, which the windows of small objects are cut from
                (``None`` where the video has none).

        Returns:
            ``(H, W) uint8`` labels on the device, and the frame's reference for the next frame.
        """
        probs = _known(self._predict(state, query, prev), "objects")
        return self._finish(state, query, probs, None if frame is None or not state.zoom else self._pixels(frame))

    def _step_given(self, state: VideoState, query: FrameEmbedding, given: np.ndarray, given_ids: list[int],
                    frame: np.ndarray) -> Tensor:
        """A frame with a given mask: track the other objects, register the given ones; ``(H, W) uint8`` labels."""
        probs = self._predict(state, query, state.prev)
        given_full = torch.from_numpy(given).to(self.device)
        given_map = _known(state.geometry, "size").mask(given_full[None, None].float())[0, 0]
        probs = self._add_given(state, query, given_map, given_ids, probs)
        image = None
        if self.zoom is not None:
            image = self._pixels(frame)
            self._give_windows(state, image, given, given_full, given_ids)
        labels, state.prev = self._finish(state, query, probs, image if state.zoom else None, skip=given_ids)
        return labels

    def _pixels(self, frame: np.ndarray) -> Tensor:
        """``(H, W, 3) uint8`` frame -> ``(3, H, W) uint8`` on the device (a view: windows convert
        only their own pixels)."""
        return torch.from_numpy(frame).to(self.device).permute(2, 0, 1)

    def _give_windows(self, state: VideoState, image: Tensor, given: np.ndarray, given_full: Tensor,
                      given_ids: list[int]) -> None:
        """Give each small object of a given mask its window (replacing any it had); large ones lose theirs.

        Args:
            image: the ``(3, H, W) uint8`` frame.
            given, given_full: its ``(H, W)`` object ids, as an array and on the device.
            given_ids: the ids in ``given``.
        """
        zoom, geometry = _known(self.zoom, "zoom"), _known(state.geometry, "size")
        scale = geometry.work[0] / geometry.size[0]
        windows = {oid: zoom_window(given == oid, zoom, scale) for oid in given_ids}
        for oid in [oid for oid, window in windows.items() if window is None]:
            state.zoom.pop(oid, None)
        small_windows = {oid: window for oid, window in windows.items() if window is not None}
        if not small_windows:
            return
        queries = self._embed_windows(state, image, list(small_windows.values()))
        size = (zoom.size, zoom.size)
        for (oid, window), query in zip(small_windows.items(), queries, strict=True):
            window_labels = window.crop(given_full[None].float(), zoom.size, mode="nearest")[0]  # (S, S) ids
            seen = set(torch.unique(window_labels).int().tolist())
            ids = [oid, *(i for i in given_ids if i != oid and i in seen)]  # its neighbours keep apart from it
            track = VideoState(geometry=Geometry(size, size, (0, 0, 0, 0)))
            one_hot = self._add_given(track, query, window_labels, ids, None)
            track.prev = self._reference(query, one_hot[:, 1])
            state.zoom[oid] = _ZoomTrack(window, track)

    def _embed_windows(self, state: VideoState, image: Tensor, windows: Sequence[Window]) -> list[FrameEmbedding]:
        """Cut ``windows`` from the ``(3, H, W) uint8`` frame ``image``, resized to the zoom's size,
        and embed them as one batch."""
        size = _known(self.zoom, "zoom").size
        crops = torch.stack([window.crop(image, size) for window in windows]).div_(255)  # (K, 3, S, S)
        with self._autocast():
            batch = (state.network or self.model).embed(crops.contiguous(memory_format=self.memory_format))
        s16, s8, s4 = batch.shared
        return [FrameEmbedding((s16[i:i + 1], s8[i:i + 1], s4[i:i + 1]), {b: k[i:i + 1] for b, k in batch.keys.items()},
                               batch.grid) for i in range(len(windows))]

    def _zoom(self, state: VideoState, image: Tensor, restored: Tensor, skip: Sequence[int]) -> Tensor:
        """Track the small objects in their windows and merge them into the frame's probabilities.

        Args:
            image: the ``(3, H, W) uint8`` frame.
            restored: ``(O + 1, H, W)`` background and object probabilities of the frame's pass
                (changed in place).
            skip: objects given at this frame (their windows start here).

        Returns:
            ``restored`` with the windows' objects merged in (:func:`~emvos.inference.zoom.merge_windows`).
            A window its object has outgrown closes; the object keeps the frame's pass.
        """
        tracks = [(oid, track) for oid, track in state.zoom.items() if oid not in skip]
        if not tracks:
            return restored
        geometry = _known(state.geometry, "size")
        queries = self._embed_windows(state, image, [track.window for _, track in tracks])
        pasted = []
        for (oid, track), query in zip(tracks, queries, strict=True):
            track.state.network = state.network
            agg = aggregate(_known(self._predict(track.state, query, track.state.prev), "objects"))  # (K + 1, S, S)
            fg = agg[1]  # the window's own object comes first, its neighbours after
            slot = state.object_ids.index(oid)
            if outgrown(track.window, fg, restored[1 + slot]):
                del state.zoom[oid]
                continue
            track.state.prev = self._reference(query, agg[1:])
            pasted.append((1 + slot, *track.window.paste(agg[:2], geometry.size)))
            track.window.follow(fg)
        return merge_windows(restored, pasted)

    def _step_graphed(self, state: VideoState, query: FrameEmbedding) -> Tensor:
        """:meth:`_track` replayed from the video's CUDA graph (captured when its objects last changed)."""
        prev = _known(state.prev, "previous frame")
        branches = list(prev.keys)
        query_tensors = _embedding_tensors(query)
        inputs = [*query_tensors, *_reference_tensors(prev)]  # the query's tensors, then the previous frame's
        if state.graph is None:
            video = weakref.ref(state)  # the state keeps the graph; the graph must not keep the state
            split = len(query_tensors)

            def track(tensors: list[Tensor]) -> list[Tensor]:
                labels, ref = self._track(_known(video(), "state"), _embedding_from_tensors(tensors[:split], branches),
                                          _reference_from_tensors(tensors[split:], branches))
                return [labels, *_reference_tensors(ref)]

            state.graph = StaticGraph(track, inputs, self.device)
        labels, *outputs = state.graph(inputs)
        state.prev = _reference_from_tensors(outputs, branches)  # the graph's buffers, copied in at the next frame
        return labels

    def _kept_keys(self, query: FrameEmbedding) -> dict[str, Tensor]:
        """The query's keys for a reference that outlives the frame. Copies where they view more: graph
        buffers that the next replay overwrites (CUDA graphs), or a whole chunk's keys (lookahead)."""
        if self.cuda_graphs or self.lookahead > 1:
            return {b: k.clone() for b, k in query.keys.items()}
        return query.keys

    def _finish(self, state: VideoState, query: FrameEmbedding, probs: Tensor, image: Tensor | None = None,
                skip: Sequence[int] = ()) -> tuple[Tensor, Reference]:
        """``(O, 2, H'', W'')`` probabilities -> ``(H, W) uint8`` labels on the device and the frame's reference.

        With the ``(3, H, W) uint8`` frame ``image``, the small objects' windows (except those of objects in
        ``skip``) track them and take part in the labels (:meth:`_zoom`); the frame's reference keeps
        the frame's pass alone.
        """
        agg = aggregate(probs)  # (O + 1, H'', W'')
        # max(dim).indices returns the same first maximum as argmax, an order of magnitude faster on CPU.
        lut, geometry = _known(state.lut, "objects"), _known(state.geometry, "size")
        restored = geometry.restore(agg[None])[0]
        if image is not None:
            if not geometry.resized:
                restored = restored.clone()  # a view of the frame's probabilities, which its reference keeps
            restored = self._zoom(state, image, restored, skip)
        labels = lut[restored.max(dim=0).indices]
        if state.probabilities is not None:
            state.probabilities.append(restored[1:].mul(255).round_().to(torch.uint8))
        return labels, self._reference(query, agg[1:])

    def _reference(self, query: FrameEmbedding, fg: Tensor) -> Reference:
        """The frame's reference for the next frame: its keys and ``(O, H'', W'')`` foreground probabilities."""
        prev_mask = downsample_mask(torch.stack([1 - fg, fg], dim=1), self.model.stride)
        return Reference(self._kept_keys(query), prev_mask.flatten(2)[None])

    def _predict(self, state: VideoState, query: FrameEmbedding, prev: Reference | None) -> Tensor | None:
        """Background/foreground probabilities ``(O, 2, H'', W'')`` of every tracked object."""
        if not state.object_ids:
            return None
        network = state.network or self.model
        prev = _known(prev, "previous frame")
        with self._autocast():
            first_parts = [network.match(query, g.ref, "first", self.bijective) for g in state.groups]
            first = {b: torch.cat([p[b] for p in first_parts], dim=1) for b in first_parts[0]}
            if state.slot_order is not None:
                first = {b: scores[:, state.slot_order] for b, scores in first.items()}
            matched = network.match(query, prev, "prev", self.bijective)
            logits = network.decode(query, first, matched, prev.mask)
        logits = logits[0]
        if logits.dtype in LOW_PRECISIONS:  # autocast's outputs; a float64 network keeps its precision
            logits = logits.float()
        probs = F.softmax(logits, dim=1)
        return probs if self.reach is None else within_reach(probs, prev.mask[0], query.grid, self.reach)

    def _add_given(self, state: VideoState, query: FrameEmbedding, given: Tensor, given_ids: list[int],
                   probs: Tensor | None) -> Tensor:
        """Register the objects of a given mask (``given``: ``(H'', W'')`` ids) and return all probabilities."""
        ids = torch.tensor(given_ids, device=given.device, dtype=given.dtype).view(-1, 1, 1)
        fg = (given[None] == ids).to(given.dtype)  # (G, H'', W'')
        one_hot = torch.stack([1 - fg, fg], dim=1)  # (G, 2, H'', W'')
        for group in state.groups:  # re-given objects leave their old reference
            keep = [i for i, oid in enumerate(group.object_ids) if oid not in given_ids]
            if len(keep) != len(group.object_ids):
                group.object_ids = [group.object_ids[i] for i in keep]
                group.ref = Reference(group.ref.keys, group.ref.mask[:, keep])
        state.groups = [g for g in state.groups if g.object_ids]
        mask16 = downsample_mask(one_hot, self.model.stride).flatten(2)[None]
        state.groups.append(_Group(list(given_ids), Reference(self._kept_keys(query), mask16)))

        rows = [] if probs is None else list(probs.unbind(0))
        for j, oid in enumerate(given_ids):
            if oid in state.object_ids:
                rows[state.object_ids.index(oid)] = one_hot[j]
            else:
                state.object_ids.append(oid)
                rows.append(one_hot[j])
        slot_of = {oid: i for i, oid in enumerate(state.object_ids)}
        order = [slot_of[oid] for g in state.groups for oid in g.object_ids]  # slot of each group row
        state.slot_order = (None if order == sorted(order)
                            else torch.argsort(torch.tensor(order, device=self.device)))
        state.lut = torch.tensor([0, *state.object_ids], dtype=torch.uint8, device=self.device)
        state.graph = None  # the objects or their references changed: capture again
        return torch.stack(rows)
