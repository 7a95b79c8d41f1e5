"""Soft aggregation of per-object probabilities into one distribution over background and objects.

Each object is predicted independently as background/foreground. The aggregated distribution takes
as background the smallest of the objects' background probabilities and normalises the odds
``p / (1 - p)`` of the background and of every object so that they sum to one (the scheme of the
official EMVOS code).
"""

from __future__ import annotations

import torch
from torch import Tensor

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
