"""Each object is looked for near where it was: a box around its previous mask (``--reach``).

Matching against the first frame is global: a girl in one school uniform matches every girl in it,
a pasted copy of a dog matches every copy. Where the decoder is unsure which one is its object, an
object's mask can jump to a look-alike across the frame within a frame or two, and tracks it from
then on. Objects move a fraction of their own size from one frame to the next, so each object's
foreground is kept only inside its previous-frame box, enlarged by ``reach`` times the box's longer
side (and one cell) on every side; outside it, its pixels go to the background or to the other
objects in the soft aggregation. An object the previous frame lost (no cell holds
:data:`LOST_PEAK` of it) is looked for everywhere, so that it can be found again where it comes
back.

The boxes are taken on the matching grid (stride 16) from the previous frame's reference masks,
which the predictor keeps anyway: a few operations per frame, no host synchronisation (CUDA graphs
replay them).
"""

from __future__ import annotations

import torch
from torch import Tensor

#: An object whose previous-frame mask holds less than this at every stride-16 cell is lost: no box.
LOST_PEAK = 0.05
#: Cells added on every side of a box beyond ``reach`` times its side (a one-cell object still moves).
PAD_CELLS = 1


def reach_boxes(prev_fg: Tensor, reach: float) -> tuple[Tensor, Tensor]:
    """Where each object may be in the next frame, on the matching grid: a box, as its rows and columns.

    A cell belongs to an object's box when it holds more than half of the object's peak probability
    (at most 0.5: small objects never fill a cell), and the box of those cells is enlarged by
    ``ceil(reach * longer side) + PAD_CELLS`` cells on every side.

    Args:
        prev_fg: ``(O, h, w)`` previous-frame foreground probabilities at stride 16.
        reach: how far around its box an object may move, in its box's longer side; > 0.

    Returns:
        ``(O, h)`` and ``(O, w)`` bool: the rows and the columns of each object's enlarged box (the box
        is their outer product), all of them for a lost object.
    """
    _, h, w = prev_fg.shape
    peak = prev_fg.flatten(1).amax(dim=1)  # (O,)
    held = prev_fg > (peak / 2).clamp(max=0.5).view(-1, 1, 1)
    ys = torch.arange(h, device=prev_fg.device)
    xs = torch.arange(w, device=prev_fg.device)
    rows, cols = held.any(dim=2), held.any(dim=1)  # (O, h), (O, w)
    y0 = torch.where(rows, ys, h).amin(dim=1)
    y1 = torch.where(rows, ys, -1).amax(dim=1)
    x0 = torch.where(cols, xs, w).amin(dim=1)
    x1 = torch.where(cols, xs, -1).amax(dim=1)
    side = torch.maximum(y1 - y0 + 1, x1 - x0 + 1).to(prev_fg.dtype)
    margin = (reach * side).ceil().long() + PAD_CELLS
    lost = (peak < LOST_PEAK).view(-1, 1)
    in_rows = (ys >= (y0 - margin)[:, None]) & (ys <= (y1 + margin)[:, None]) | lost
    in_cols = (xs >= (x0 - margin)[:, None]) & (xs <= (x1 + margin)[:, None]) | lost
    return in_rows, in_cols


def within_reach(probs: Tensor, prev_mask: Tensor, grid: tuple[int, int], reach: float) -> Tensor:
    """Background/foreground probabilities with each object's foreground kept inside its box.

    Args:
        probs: ``(O, 2, H, W)`` background/foreground probabilities of ``O`` objects, ``H = 16 h``
            and ``W = 16 w``; changed in place.
        prev_mask: ``(O, 2, h * w)`` the previous frame's background/foreground probabilities at
            stride 16 (the reference the frame was matched against).
        grid: ``(h, w)``, the stride-16 grid.
        reach: see :func:`reach_boxes`.

    Returns:
        ``probs``, its foreground set to 0 outside each object's box (:func:`reach_boxes`) and its
        background the complement.
    """
    h, w = grid
    rows, cols = reach_boxes(prev_mask[:, 1].to(probs.dtype).reshape(-1, h, w), reach)
    height, width = probs.shape[-2:]
    rows = rows.repeat_interleave(height // h, dim=1).to(probs.dtype)  # (O, H)
    cols = cols.repeat_interleave(width // w, dim=1).to(probs.dtype)  # (O, W)
    fg = probs[:, 1]
    fg.mul_(rows[:, :, None]).mul_(cols[:, None, :])  # separable: two broadcast products, no (O, H, W) mask
    probs[:, 0] = 1 - fg
    return probs
