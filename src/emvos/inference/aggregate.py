"""Soft aggregation of per-object probabilities into one distribution over background and objects.

Each object is predicted independently as background/foreground. The aggregated distribution takes
as background the smallest of the objects' background probabilities and normalises the odds
``p / (1 - p)`` of the background and of every object so that they sum to one (the scheme of the
official EMVOS code).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from emvos.model.matching import downsample_mask
from emvos.model.network import EMVOS, FrameEmbedding, Reference

#: Probabilities are clipped to ``[EPS, 1 - EPS]`` before odds are taken.
EPS = 1e-7


def aggregate(probs: Tensor) -> Tensor:
    """Aggregate independent background/foreground predictions of ``O`` objects.

    Args:
        probs: ``(O, 2, H, W)``: each object's background (channel 0) and foreground (channel 1)
            probabilities, ``O >= 1``.

    Returns:
        ``(O + 1, H, W)`` probabilities of the background (index 0) and of each object; they sum
        to one at every pixel.
    """
    bg = probs[:, 0].amin(dim=0, keepdim=True)
    odds_bg = bg.clamp(EPS, 1 - EPS) / (1 - bg).clamp(EPS, 1 - EPS)
    odds = probs[:, 1].clamp(EPS, 1 - EPS) / probs[:, 0].clamp(EPS, 1 - EPS)
    odds = torch.cat([odds_bg, odds], dim=0)
    return odds / odds.sum(dim=0, keepdim=True)


def unroll_aggregated(network: EMVOS, frames: Iterable[FrameEmbedding], first: Tensor) -> Tensor:
    """Unroll one clip whose objects are tracked together, as inference tracks them.

    Like :meth:`EMVOS.unroll`, frame 0 is given and each later frame is matched against it and
    against the previous frame, but every object of the clip is predicted in each frame and the
    predictions are combined by :func:`aggregate`; each object's previous-frame reference is its
    share of that distribution. Differentiable (training and test-time adaptation use it).

    Args:
        network: the network.
        frames: the embeddings of the clip's ``L`` frames in order, one clip each (``B = 1``).
        first: ``(O, h, w)`` foreground masks of the ``O`` objects in frame 0 (0/1, float).

    Returns:
        ``(L - 1, O + 1, h, w)`` aggregated probabilities of frames ``1..L-1`` (background first).
    """
    frames = iter(frames)
    embedding = next(frames)
    reference = Reference(embedding.keys, downsample_mask(torch.stack([1 - first, first], 1),
                                                          network.stride).flatten(2)[None])
    prev, outputs = reference, []
    for query in frames:
        logits = network.decode(query, network.match(query, reference, "first"), network.match(query, prev, "prev"),
                                prev.mask)[0]  # (O, 2, h, w)
        probs = aggregate(F.softmax(logits.float(), dim=1))  # (O + 1, h, w)
        outputs.append(probs)
        fg = probs[1:].to(first.dtype)
        prev = Reference(query.keys, downsample_mask(torch.stack([1 - fg, fg], 1), network.stride).flatten(2)[None])
    return torch.stack(outputs)
