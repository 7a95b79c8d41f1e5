"""Test-time adaptation: fine-tune a copy of the network on the frame a user annotated.

Before propagating, the trainable parts of the network (key projections and decoder; the encoder
stays frozen) are fine-tuned for a few dozen steps on pseudo-videos made from the annotated frame
alone, as OSVOS and Lucid Data Dreaming did: random affine and photometric variants of the frame
and its mask, unrolled as short clips as in training (frame 0 given, the rest predicted from the
first and the previous frame). The network learns what this video's objects and background look
like; with several objects, they are tracked together through the soft aggregation of inference,
so that it also learns to keep neighbours apart.

The encoder runs once per variant; the steps reuse its cached features, so each step costs only
the keys, matching and decoder, forward and backward.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from emvos.inference.aggregate import EPS, unroll_aggregated
from emvos.inference.settings import DEFAULT_ADAPT_STEPS, check_setting_names
from emvos.model.encoders.base import Features
from emvos.model.network import EMVOS


@dataclass(frozen=True)
class AdaptSettings:
    """How to adapt a network to an annotated frame.

    Attributes:
        steps: optimizer steps (0 disables adaptation).
        lr: Adam's learning rate.
        joint_lr: Adam's learning rate on a frame with several objects adapted jointly (``joint``),
            whose clips learn from the cross-entropy of all objects together; ``None``: ``lr``.
        variants: augmented copies of the frame the clips are drawn from (the frame itself is one more).
        clip_len: frames per pseudo-video clip (the first one given).
        batch_size: clips per step.
        crop: side in pixels of the square window each clip is cut from (a multiple of the network's
            stride; the whole frame where it is smaller). Matching costs grow with the square of the
            window's area: a 384 window makes a step several times cheaper than a 480p frame.
        degrees, scale, shear, translate: ranges of each variant's random affine warp (rotation and
            shear in degrees, scale as a factor, shift as a fraction of the frame's side).
        brightness, contrast: largest relative change of each variant's brightness and contrast.
        keys: also fine-tune the key projections. Without them only the decoder changes, so the
            keys of references taken before adapting stay valid (a video can adapt again mid-way).
        again: whether a video adapts again at each later frame given a mask (objects that appear
            later, a correction), on that frame's labels: its decoder only, from the video's
            adapted network (:class:`~emvos.inference.VideoPredictor`).
        joint: on a frame with several objects, each clip tracks every object visible in its
            window together, their predictions combined by soft aggregation as in inference, so that
            neighbouring objects learn to keep apart. Otherwise (and always on a frame with one
            object) each clip tracks one object alone, as in training.
        joint_objects: most objects a joint clip tracks (its own and others drawn at random): a
            step's cost grows with them.
        absent_p: on a frame with one object, the probability that a clip's object leaves the
            view and comes back: its middle frames are cut from windows of the frame that do not
            show it (where the frame has such a window) and its last frame from the given one's
            window again, so the network learns to mark nothing while the object is away, however
            alike the rest of the scene looks, and to take it up again when it returns. Frames with
            several objects never draw such clips: there they taught the network to drop small
            objects (the model card's re-entry test).
        seed: seed of the variants and the clips (adaptation is deterministic for a given seed).
    """

    steps: int = DEFAULT_ADAPT_STEPS
    lr: float = 5e-4
    joint_lr: float | None = None
    variants: int = 12
    clip_len: int = 3
    batch_size: int = 2
    crop: int = 256
    degrees: float = 12.0
    scale: tuple[float, float] = (0.85, 1.15)
    shear: float = 8.0
    translate: float = 0.08
    brightness: float = 0.2
    contrast: float = 0.2
    keys: bool = True
    again: bool = True
    joint: bool = True
    joint_objects: int = 8
    absent_p: float = 0.0
    seed: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdaptSettings:
        """Settings from plain data (a model file's ``adapt`` entry, JSON): lists become tuples; fields
        not given keep their defaults; an unknown name is a :class:`ValueError` naming it."""
        check_setting_names(cls, data, "adaptation")
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.joint_lr is not None and self.joint_lr <= 0:
            raise ValueError(f"joint_lr must be positive, got {self.joint_lr}")
        if self.variants < 1:
            raise ValueError(f"variants must be >= 1, got {self.variants}")
        if self.clip_len < 2:
            raise ValueError(f"clip_len must be >= 2 (a given frame and a predicted one), got {self.clip_len}")
        if self.crop < 16:
            raise ValueError(f"crop must be at least 16 pixels, got {self.crop}")
        if self.joint_objects < 1:
            raise ValueError(f"joint_objects must be >= 1, got {self.joint_objects}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.absent_p <= 1.0:
            raise ValueError(f"absent_p must lie in [0, 1], got {self.absent_p}")


@dataclass(frozen=True)
class AdaptReport:
    """What :func:`adapt_network` did.

    Attributes:
        steps: optimizer steps taken.
        first_loss, last_loss: mean loss of the first and last fifth of the steps.
        seconds: wall-clock time, variants and encoder included.
    """

    steps: int
    first_loss: float
    last_loss: float
    seconds: float


def _affine_thetas(count: int, settings: AdaptSettings, height: int, width: int,
                   generator: torch.Generator) -> Tensor:
    """``(count, 2, 3)`` random warps in the normalised coordinates of :func:`F.affine_grid`.

    Each maps output coordinates to input ones; rotation and shear are applied in pixel units (so an
    angle is an angle on a non-square frame), then expressed in normalised coordinates.
    """
    def uniform(low: float, high: float) -> Tensor:
        return low + (high - low) * torch.rand(count, generator=generator, dtype=torch.float64)

    angle = torch.deg2rad(uniform(-settings.degrees, settings.degrees))
    factor = uniform(*settings.scale)
    shear_x = torch.tan(torch.deg2rad(uniform(-settings.shear, settings.shear)))
    shift = torch.stack([uniform(-settings.translate, settings.translate) * 2,
                         uniform(-settings.translate, settings.translate) * 2], dim=1)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    shear = torch.eye(2, dtype=torch.float64).repeat(count, 1, 1)
    shear[:, 0, 1] = shear_x
    linear = rotation @ shear / factor.view(-1, 1, 1)  # output -> input: the inverse scale
    half = torch.tensor([width / 2, height / 2], dtype=torch.float64)
    linear = linear / half.view(1, 2, 1) * half.view(1, 1, 2)  # pixel units -> normalised units
    return torch.cat([linear, shift.unsqueeze(2)], dim=2).float()


def make_variants(image: Tensor, labels: Tensor, settings: AdaptSettings,
                  generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """The annotated frame followed by ``settings.variants`` randomly warped and recoloured copies.

    Args:
        image: ``(3, H, W)`` RGB in ``[0, 1]``.
        labels: ``(H, W)`` integer object ids.
        settings: the warp and colour ranges.
        generator: source of randomness (CPU).

    Returns:
        ``(V + 1, 3, H, W)`` images and ``(V + 1, H, W)`` ids (``int64``); index 0 is the frame itself.
    """
    count = settings.variants
    height, width = labels.shape
    theta = _affine_thetas(count, settings, height, width, generator).to(image.device)
    grid = F.affine_grid(theta, [count, 1, height, width], align_corners=False)
    images = F.grid_sample(image.expand(count, -1, -1, -1), grid, mode="bilinear", padding_mode="reflection",
                           align_corners=False)
    ids = F.grid_sample(labels.to(image.dtype).expand(count, 1, -1, -1), grid, mode="nearest",
                        padding_mode="reflection", align_corners=False)[:, 0].round().long()
    gain = 1 + (2 * torch.rand(count, 1, 1, 1, generator=generator) - 1).to(image) * settings.contrast
    offset = (2 * torch.rand(count, 1, 1, 1, generator=generator) - 1).to(image) * settings.brightness / 2
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = ((images - mean) * gain + mean + offset).clamp_(0, 1)
    return torch.cat([image[None], images]), torch.cat([labels[None].long(), ids])


def _object_centres(ids: Tensor, object_ids: list[int]) -> list[dict[int, tuple[float, float]]]:
    """For each of ``(V, H, W)`` id maps, the ``(y, x)`` centre of each object visible in it."""
    centres = []
    for labels in ids:
        found = {}
        for oid in object_ids:
            ys, xs = torch.nonzero(labels == oid, as_tuple=True)
            if len(ys):
                found[oid] = (ys.float().mean().item(), xs.float().mean().item())
        centres.append(found)
    return centres


#: A window in pixels, ``(top, left, height, width)``, aligned to the network's stride.
Window = tuple[int, int, int, int]


def _draw_clip(centres: list[dict[int, tuple[float, float]]], ids: Tensor, settings: AdaptSettings, stride: int,
               generator: torch.Generator) -> tuple[Tensor, int, list[Window]]:
    """One pseudo-video: the frames' variant indices ``(L,)``, the tracked object and each frame's window.

    The given frame is the annotated one half of the time, else a variant in which an object is
    visible; the other frames are variants in random order. The window (aligned to ``stride``)
    contains the tracked object's centre in the given frame, anywhere in it; every frame is cut
    from that window, except, with probability ``settings.absent_p``, the middle frames of the clip,
    each cut from a window of its variant that does not show the tracked object (when there is
    one; see :func:`_absent_window`).

    Args:
        centres: per variant, the ``(y, x)`` centre of each visible object.
        ids: ``(V, H, W)`` object ids of every variant.
    """
    def draw(n: int) -> int:
        return int(torch.randint(n, (1,), generator=generator))

    candidates = [v for v, found in enumerate(centres) if found]
    given = 0 if centres[0] and torch.rand(1, generator=generator).item() < 0.5 else candidates[draw(len(candidates))]
    visible = sorted(centres[given])
    oid = visible[draw(len(visible))]
    order = torch.tensor([given] + [draw(len(centres)) for _ in range(settings.clip_len - 1)])
    height, width = ids.shape[1:]
    size_h, size_w = min(height, settings.crop // stride * stride), min(width, settings.crop // stride * stride)
    cy, cx = centres[given][oid]

    def start(centre: float, window: int, side: int) -> int:
        low = max(0, math.ceil((centre - window + 1) / stride))  # first aligned start whose window holds the centre
        high = min((side - window) // stride, int(centre // stride))
        if high < low:  # no aligned window holds it (a centre at the frame's edge): the nearest one
            return min(low, (side - window) // stride) * stride
        return (low + draw(high - low + 1)) * stride

    window = (start(cy, size_h, height), start(cx, size_w, width), size_h, size_w)
    windows = [window] * settings.clip_len
    if settings.absent_p > 0 and torch.rand(1, generator=generator).item() < settings.absent_p:
        for t in range(1, settings.clip_len - 1):
            windows[t] = _absent_window(ids[order[t]] == oid, size_h, size_w, stride, generator) or window
    return order, oid, windows


def _absent_window(mask: Tensor, height: int, width: int, stride: int, generator: torch.Generator) -> Window | None:
    """A random ``height`` x ``width`` window, aligned to ``stride``, with no pixel of ``mask`` ``(H, W)``; ``None``
    when every window shows some of it."""
    cells = F.avg_pool2d(mask[None, None].float(), stride)[0, 0] > 0  # (H/stride, W/stride): cells the mask touches
    rows, cols = height // stride, width // stride
    sums = F.pad(cells.float().cumsum(0).cumsum(1), (1, 0, 1, 0))  # summed-area table
    touched = sums[rows:, cols:] - sums[:-rows, cols:] - sums[rows:, :-cols] + sums[:-rows, :-cols]
    free = torch.nonzero(touched == 0)
    if len(free) == 0:
        return None
    top, left = free[int(torch.randint(len(free), (1,), generator=generator))].tolist()
    return top * stride, left * stride, height, width


def _crop_features(features: Features, index: Tensor, top: int, left: int, height: int, width: int) -> Features:
    """The cached features of the frames ``index`` (``(B,)``) inside a pixel window aligned to the stride."""
    def cut(level: Tensor, stride: int) -> Tensor:
        return level[index.to(level.device), :, top // stride:(top + height) // stride,
                     left // stride:(left + width) // stride]

    return Features(cut(features.s4, 4), cut(features.s8, 8), cut(features.s16, 16))


def _joint_loss(network: EMVOS, features: Features, ids: Tensor, order: Tensor, windows: list[Window],
                tracked: int, limit: int, generator: torch.Generator) -> Tensor:
    """Cross-entropy of one clip whose visible objects are tracked together, as inference does.

    Args:
        network: the network being adapted.
        features: the cached features of every variant.
        ids: ``(V, H, W)`` object ids of every variant.
        order: ``(L,)`` the clip's variants; the first one is given.
        windows: each frame's ``(top, left, height, width)`` crop, aligned to the stride.
        tracked: the object the clip was drawn for (always tracked).
        limit: most objects tracked together; beyond it, ``tracked`` and others drawn at random,
            the pixels of the objects left out being left out of the loss.
        generator: source of that draw.

    Returns:
        The mean over the predicted frames of the pixel-wise cross-entropy of the aggregated
        ``(O + 1)``-way distribution (objects outside the given frame's window count as background).
    """
    crops = torch.stack([ids[v, top:top + h, left:left + w]
                         for v, (top, left, h, w) in zip(order.tolist(), windows, strict=True)])  # (L, h, w)
    objects = [int(i) for i in torch.unique(crops[0]) if i != 0]
    lut = torch.zeros(int(ids.max()) + 1, dtype=torch.long, device=ids.device)
    if len(objects) > limit:  # the cost grows with the objects: track a few, ignore the others' pixels
        others = [oid for oid in objects if oid != tracked]
        lut[torch.tensor(others, device=ids.device)] = -100  # F.nll_loss's ignore_index
        picked = torch.randperm(len(others), generator=generator)[:limit - 1].tolist()
        objects = sorted([tracked, *(others[i] for i in picked)])
    lut[torch.tensor(objects, device=ids.device)] = torch.arange(1, len(objects) + 1, device=ids.device)
    targets = lut[crops]  # (L, h, w) in 0..O, or -100 for objects left out
    given = F.one_hot(targets[0].clamp_min(0), len(objects) + 1)  # objects left out: background in the given frame
    one_hot = given.permute(2, 0, 1)[1:].to(features.s16.dtype)  # (O, h, w)
    embeddings = (network.embed_features(_crop_features(features, order[t:t + 1], *windows[t]))
                  for t in range(len(order)))
    log_probs = unroll_aggregated(network, embeddings, one_hot).clamp_min(EPS).log()  # (L - 1, O + 1, h, w)
    return torch.stack([F.nll_loss(log_probs[t][None], targets[t + 1][None]) for t in range(len(log_probs))]).mean()


#: Computes the frozen encoder's features of ``(N, 3, H, W)`` images in ``[0, 1]``.
Encode = Callable[[Tensor], Features]


def _encode(encoder: Encode, images: Tensor, batch: int = 4) -> Features:
    """The frozen encoder's features of ``(N, 3, H, W)`` images, ``batch`` at a time."""
    with torch.no_grad():
        parts = [encoder(images[i:i + batch]) for i in range(0, len(images), batch)]
    return Features(*(torch.cat(level) for level in zip(*parts, strict=True)))


def adapt_network(network: EMVOS, image: Tensor, labels: Tensor,
                  settings: AdaptSettings = AdaptSettings(),
                  encoder: Encode | None = None) -> tuple[EMVOS, AdaptReport]:
    """Fine-tune a copy of ``network`` on pseudo-videos of one annotated frame.

    Args:
        network: the reference network (not modified).
        image: ``(3, H, W)`` RGB in ``[0, 1]`` at the working geometry (``H``, ``W`` multiples of the
            network's stride), on the network's device.
        labels: ``(H, W)`` object ids of that frame (0 = background; any number of objects).
        settings: steps, learning rate and augmentation.
        encoder: computes the variants' features; default ``network.encoder``. The encoder is
            frozen, so the encoder of a copy prepared for inference (:mod:`emvos.inference.optimize`,
            same weights, several times faster on the CPU) gives the same features up to rounding.

    Returns:
        The adapted copy (evaluation mode, no gradients) and what the adaptation did.

    Raises:
        ValueError: the mask has no object, or the frame is not a multiple of the stride.
    """
    start = time.perf_counter()
    height, width = labels.shape
    if height % network.stride or width % network.stride:
        raise ValueError(f"image {height}x{width} must be a multiple of the network's stride {network.stride}")
    object_ids = [int(i) for i in torch.unique(labels) if i != 0]
    if not object_ids:
        raise ValueError("the annotated frame has no object to adapt to")
    adapted = copy.deepcopy(network).eval()
    tuned = ("keys.", "decoder.") if settings.keys else ("decoder.",)
    trainable = [p for name, p in adapted.named_parameters() if name.startswith(tuned)]
    if settings.steps == 0:
        return adapted, AdaptReport(0, math.nan, math.nan, time.perf_counter() - start)
    generator = torch.Generator().manual_seed(settings.seed)
    images, ids = make_variants(image, labels, settings, generator)
    features = _encode(encoder or adapted.encoder, images)
    centres = _object_centres(ids, object_ids)  # per variant, the visible objects' centres
    for p in trainable:
        p.requires_grad_(True)
    joint = settings.joint and len(object_ids) > 1
    lr = settings.joint_lr if joint and settings.joint_lr is not None else settings.lr
    optimizer = torch.optim.Adam(trainable, lr=lr)
    drawing = settings if len(object_ids) == 1 else dataclasses.replace(settings, absent_p=0.0)
    losses = []
    for _ in range(settings.steps):
        clips = [_draw_clip(centres, ids, drawing, adapted.stride, generator)
                 for _ in range(settings.batch_size)]
        if joint:
            loss = torch.stack([_joint_loss(adapted, features, ids, order, windows, oid, settings.joint_objects,
                                            generator) for order, oid, windows in clips]).mean()
        else:
            loss = _one_object_loss(adapted, features, ids, clips)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    for p in adapted.parameters():
        p.requires_grad_(False)
    fifth = max(1, len(losses) // 5)
    report = AdaptReport(len(losses), sum(losses[:fifth]) / fifth, sum(losses[-fifth:]) / fifth,
                         time.perf_counter() - start)
    return adapted, report


def _one_object_loss(network: EMVOS, features: Features, ids: Tensor,
                     clips: list[tuple[Tensor, int, list[Window]]]) -> Tensor:
    """Cross-entropy of clips that each track one object alone (:meth:`EMVOS.unroll`, as training does)."""
    masks = torch.stack([torch.stack([ids[v, top:top + h, left:left + w] == oid
                                      for v, (top, left, h, w) in zip(order.tolist(), windows, strict=True)])
                         for order, oid, windows in clips]).long()  # (B, L, h, w)
    frames = (network.embed_features(Features(*(torch.cat(level) for level in zip(
        *(_crop_features(features, order[t:t + 1], *windows[t]) for order, _, windows in clips), strict=True))))
        for t in range(len(clips[0][0])))
    logits = network.unroll(frames, masks[:, 0])  # (B, L - 1, 2, h, w)
    return F.cross_entropy(logits.flatten(0, 1), masks[:, 1:].flatten(0, 1))
