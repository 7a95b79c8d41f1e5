"""A Figure-1-style toy: how SM, BM and EM treat a distractor, on five reference and five query pixels.

The case is the distractor case of ``tests/test_matching.py``: 8-channel keys of norm 4 for a target
``T``, a distractor ``D`` (cosine 0.9 with ``T``) and three background pixels ``B1..B3`` (orthogonal to
everything). In the reference frame ``T`` is the foreground and ``D`` is background; the query frame
holds the same five pixels, laid out on a 1 x 5 line (``T B1 B2 B3 D``) so that the distractor lies
far from the target for the kernel filter.

Surjective matching hands the target's reference pixel to every look-alike: ``D`` gets a foreground
score of 0.95 against a background score of 1. Equalized matching makes that pixel split one unit of
mass over the query, so most of it goes to ``T`` and ``D``'s foreground score collapses; bijective
matching reaches a similar result by discarding matches (a kernel around ``T``, or top-1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from emvos.model import matching
from emvos.visualize.canvas import INK, PAPER, centred_text, colormap, font, normalise

#: Names of the reference pixels (rows) and of the query pixels (columns, in their 1 x 5 layout).
REFERENCE_NAMES = ("T", "D", "B1", "B2", "B3")
QUERY_NAMES = ("T", "B1", "B2", "B3", "D")
#: The toy's matchers and bijective hyper-parameters.
TOY_MATCHERS = ("sm", "bm-kernel", "bm-topk", "em")
TOY_KERNEL_SIGMA = 1.5
TOY_TOPK = 1

_SWATCH = {"T": (200, 40, 40), "D": (225, 105, 60), "B1": (80, 115, 170), "B2": (105, 150, 105),
           "B3": (150, 135, 100)}
_CELL = 46
_LABEL_WIDTH = 92
_BLOCK_GAP = 28
_HEADER = 58  # title and column names
_CAPTION = (
    "Toy case of tests/test_matching.py. Reference pixels (rows): T = target (foreground), D = distractor "
    "(background), B1-B3 = background.",
    "Query pixels (columns) on a 1 x 5 line. Matrices: the affinity each matcher uses, normalised per matrix. "
    "fg / bg: scores of eq. 2;",
    f"outlined: fg > bg. BM: kernel of std {TOY_KERNEL_SIGMA:g} cells around each reference pixel's best "
    f"match, or top-{TOY_TOPK}. EM: softmax over the query (eq. 5).",
)


@dataclass(frozen=True)
class ToyCase:
    """Keys and reference mask of the toy.

    Attributes:
        ref_keys: ``(1, C, 5)`` unnormalised keys of :data:`REFERENCE_NAMES`.
        query_keys: ``(1, C, 5)`` unnormalised keys of :data:`QUERY_NAMES`.
        mask: ``(1, 2, 5)`` background / foreground of the reference pixels.
    """

    ref_keys: Tensor
    query_keys: Tensor
    mask: Tensor


@dataclass(frozen=True)
class ToyScores:
    """What one matcher does on the toy.

    Attributes:
        affinity: ``(5, 5)`` affinity (after the bijective filter for BM), reference x query.
        foreground: ``(5,)`` foreground score of each query pixel.
        background: ``(5,)`` background score of each query pixel.
    """

    affinity: np.ndarray
    foreground: np.ndarray
    background: np.ndarray


def toy_case() -> ToyCase:
    """The toy's keys: norm 4; ``D`` has cosine 0.9 with ``T``; ``B1..B3`` are orthogonal to all."""
    channels = 8
    keys = {name: torch.zeros(channels) for name in REFERENCE_NAMES}
    keys["T"][0] = 4.0
    keys["D"][0], keys["D"][1] = 4.0 * 0.9, 4.0 * 0.436
    for i, name in enumerate(("B1", "B2", "B3")):
        keys[name][2 + i] = 4.0
    foreground = torch.tensor([1.0 if name == "T" else 0.0 for name in REFERENCE_NAMES])
    return ToyCase(torch.stack([keys[n] for n in REFERENCE_NAMES], dim=1)[None],
                   torch.stack([keys[n] for n in QUERY_NAMES], dim=1)[None],
                   torch.stack([1 - foreground, foreground])[None])


def toy_scores(case: ToyCase) -> dict[str, ToyScores]:
    """Affinity and scores of each of :data:`TOY_MATCHERS` on ``case``."""
    surjective = matching.surjective_affinity(matching.normalize_keys(case.ref_keys),
                                              matching.normalize_keys(case.query_keys))
    affinities = {
        "sm": surjective,
        "bm-kernel": matching.kernel_filter(surjective, (1, len(QUERY_NAMES)), TOY_KERNEL_SIGMA),
        "bm-topk": matching.topk_filter(surjective, TOY_TOPK),
        "em": matching.equalized_affinity(case.ref_keys, case.query_keys),
    }
    out = {}
    for name, affinity in affinities.items():
        scores = matching.masked_max(affinity, case.mask)[0]  # (2, 5)
        out[name] = ToyScores(affinity[0].numpy(), scores[1].numpy(), scores[0].numpy())
    return out


def _cell(draw: ImageDraw.ImageDraw, left: float, top: float, value: float, shade: float,
          outlined: bool = False) -> None:
    """A matrix cell: coloured by ``shade`` in ``[0, 1]``, showing ``value``."""
    colour = tuple(int(c) for c in colormap(np.array(shade)))
    draw.rectangle((left, top, left + _CELL - 1, top + _CELL - 1), fill=colour,
                   outline=(220, 30, 30) if outlined else PAPER, width=4 if outlined else 1)
    centred_text(draw, (left + _CELL / 2, top + _CELL / 2), f"{value:.2f}", 13,
                 fill=INK if shade > 0.55 else PAPER)


def _swatch_label(draw: ImageDraw.ImageDraw, left: float, top: float, width: float, height: float, name: str,
                  text: str) -> None:
    draw.rectangle((left, top, left + width - 1, top + height - 1), fill=_SWATCH[name])
    centred_text(draw, (left + width / 2, top + height / 2), text, 13, fill=PAPER)


def render_toy_figure(case: ToyCase | None = None) -> Image.Image:
    """Render the toy: per matcher, its affinity matrix and the fg / bg scores of the query pixels.

    Args:
        case: The toy (default :func:`toy_case`).

    Returns:
        An RGB image.
    """
    scores = toy_scores(case or toy_case())
    titles = {"sm": "SM", "bm-kernel": f"BM kernel (K={TOY_KERNEL_SIGMA:g})", "bm-topk": f"BM top-K (K={TOY_TOPK})",
              "em": "EM"}
    n = len(QUERY_NAMES)
    block = n * _CELL
    matrix_top = _HEADER
    scores_top = matrix_top + n * _CELL + 14
    caption_top = scores_top + 2 * _CELL + 16
    width = _LABEL_WIDTH + len(TOY_MATCHERS) * (block + _BLOCK_GAP)
    figure = Image.new("RGB", (width, caption_top + 20 * (len(_CAPTION) + 1) + 8), PAPER)
    draw = ImageDraw.Draw(figure)
    for i, name in enumerate(REFERENCE_NAMES):
        role = " (fg)" if name == "T" else ""
        _swatch_label(draw, 6, matrix_top + i * _CELL + 3, _LABEL_WIDTH - 16, _CELL - 6, name, f"ref {name}{role}")
    for j, label in enumerate(("fg score", "bg score")):
        centred_text(draw, ((_LABEL_WIDTH - 10) / 2, scores_top + j * _CELL + _CELL / 2), label, 14)
    for b, matcher in enumerate(TOY_MATCHERS):
        left = _LABEL_WIDTH + b * (block + _BLOCK_GAP)
        result = scores[matcher]
        centred_text(draw, (left + block / 2, 14), titles[matcher], 17)
        for j, name in enumerate(QUERY_NAMES):
            _swatch_label(draw, left + j * _CELL + 2, 30, _CELL - 4, 22, name, name)
        shades = normalise(result.affinity)
        for i in range(n):
            for j in range(n):
                _cell(draw, left + j * _CELL, matrix_top + i * _CELL, float(result.affinity[i, j]), float(shades[i, j]))
        both = normalise(np.stack([result.foreground, result.background]))
        for j in range(n):
            wins = bool(result.foreground[j] > result.background[j])
            _cell(draw, left + j * _CELL, scores_top, float(result.foreground[j]), float(both[0, j]), outlined=wins)
            _cell(draw, left + j * _CELL, scores_top + _CELL, float(result.background[j]), float(both[1, j]))
    d = QUERY_NAMES.index("D")
    fg = {name: result.foreground[d] for name, result in scores.items()}
    summary = (f"The distractor D in the query gets a foreground score of {fg['sm']:.2f} with SM (background "
               f"{scores['sm'].background[d]:.2f}), {fg['bm-kernel']:.2f} with BM kernel, {fg['bm-topk']:.2f} "
               f"with BM top-K, {fg['em']:.2f} with EM (background {scores['em'].background[d]:.2f}).")
    caption_font = font(14)
    for k, line in enumerate((summary, *_CAPTION)):
        draw.text((8, caption_top + 20 * k), line, fill=INK, font=caption_font)
    return figure
