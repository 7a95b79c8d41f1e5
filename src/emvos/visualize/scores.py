"""Foreground score maps of surjective, bijective and equalized matching (paper §4.3, Figure 4).

For one query frame and one reference frame with its mask, each matcher gives the foreground score
of every query pixel: the masked query-wise maximum of eq. 2 over the affinity of that matcher, on
the stride-16 grid of the network's keys (:meth:`emvos.model.network.EMVOS.match`):

* ``sm``: surjective matching (eq. 1) on the ``sm`` branch's keys;
* ``bm-kernel`` / ``bm-topk``: bijective matching, the KMN-style Gaussian kernel or the BMVOS-style
  top-K filter (eq. 3) applied to surjective matching at test time. Bijective matching has no keys
  of its own: it **reuses the** ``sm`` **keys**, as it replaces surjective matching in the network;
* ``em``: equalized matching (eq. 4-5) on the ``em`` branch's keys.

A model trained with ``sm+em`` has every map; an ``sm`` model has no ``em`` map, an ``em`` model
only the ``em`` map. The maps are upsampled bilinearly from the key grid to the frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from PIL import Image

from emvos.inference.geometry import Geometry
from emvos.io import overlay
from emvos.model.config import DEFAULT_KERNEL_K, DEFAULT_TOPK_K, Bijective, BijectiveKind
from emvos.model.matching import downsample_mask
from emvos.model.network import EMVOS, Reference
from emvos.visualize.canvas import colormap, normalise, panel_size, placeholder, titled_row

#: The matchers, in the order of the figure's panels.
MATCHERS = ("sm", "bm-kernel", "bm-topk", "em")


@dataclass(frozen=True)
class MatchingScores:
    """Foreground score maps of one query frame against one reference frame.

    Attributes:
        maps: Per matcher of :data:`MATCHERS`, ``(H, W) float32`` scores at the frame's size, or
            ``None`` when the model lacks the branch the matcher needs (``sm`` for SM and BM, ``em``
            for EM).
        kernel_k: Standard deviation of ``bm-kernel``'s Gaussian, in stride-16 grid cells.
        topk_k: Number of query pixels each reference pixel keeps in ``bm-topk``.
    """

    maps: dict[str, npt.NDArray[np.float32] | None]
    kernel_k: float
    topk_k: int

    def title(self, matcher: str) -> str:
        """The panel title of ``matcher``."""
        return {"sm": "SM", "bm-kernel": f"BM kernel (K={self.kernel_k:g})", "bm-topk": f"BM top-K (K={self.topk_k})",
                "em": "EM"}[matcher]


def _tensor(image: npt.NDArray[np.uint8], device: torch.device) -> torch.Tensor:
    """``(H, W, 3) uint8`` -> ``(1, 3, H, W)`` float in ``[0, 1]``."""
    return torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float().div_(255)


@torch.inference_mode()
def matching_score_maps(model: EMVOS, reference: npt.NDArray[np.uint8], mask: npt.NDArray[np.bool_],
                        query: npt.NDArray[np.uint8], *, kernel_k: float = DEFAULT_KERNEL_K,
                        topk_k: int = DEFAULT_TOPK_K, resolution: int = 480) -> MatchingScores:
    """Foreground score maps of every matcher the model has (see the module docstring).

    Args:
        model: The network (on any device; evaluation mode is the caller's business).
        reference: ``(H, W, 3) uint8`` RGB reference frame.
        mask: ``(H, W)`` bool, the foreground in the reference frame.
        query: ``(H, W, 3) uint8`` RGB query frame.
        kernel_k: ``bm-kernel``'s standard deviation, in stride-16 cells (> 0).
        topk_k: ``bm-topk``'s K (>= 1).
        resolution: Shorter side the frames are resized to before encoding (0 keeps their size).

    Returns:
        The maps, at the frames' size.

    Raises:
        ValueError: the frames or the mask differ in size, or a K is out of range.
    """
    if reference.shape != query.shape or mask.shape != query.shape[:2]:
        raise ValueError(f"reference {reference.shape}, mask {mask.shape} and query {query.shape} differ in size")
    if kernel_k <= 0 or topk_k < 1:
        raise ValueError(f"kernel K must be > 0 and top-K K >= 1, got {kernel_k} and {topk_k}")
    device = next(model.parameters()).device
    geometry = Geometry.for_frames(query.shape[:2], resolution, model.stride)
    ref_embedding = model.embed(geometry.image(_tensor(reference, device)))
    query_embedding = model.embed(geometry.image(_tensor(query, device)))
    fg = geometry.mask(torch.from_numpy(mask.astype(np.float32)).to(device)[None, None])[:, 0]  # (1, H'', W'')
    ref_mask = downsample_mask(torch.stack([1 - fg, fg], dim=1), model.stride).flatten(2)[:, None]  # (1, 1, 2, N)
    ref = Reference(ref_embedding.keys, ref_mask)

    def frame_map(scores: torch.Tensor) -> npt.NDArray[np.float32]:
        """``(1, 1, 2, Nq)`` background/foreground scores -> ``(H, W)`` foreground at the frame's size."""
        grid = scores[:, 0, 1].view(1, 1, *query_embedding.grid)
        padded = F.interpolate(grid, size=geometry.padded, mode="bilinear", align_corners=False)
        return geometry.restore(padded)[0, 0].float().cpu().numpy()

    branches = model.config.branches
    plain = model.match(query_embedding, ref, "first")
    maps: dict[str, npt.NDArray[np.float32] | None] = dict.fromkeys(MATCHERS)
    if "sm" in branches:
        maps["sm"] = frame_map(plain["sm"])
        bijectives: tuple[tuple[BijectiveKind, float], ...] = (("kernel", float(kernel_k)), ("topk", float(topk_k)))
        for kind, k in bijectives:
            filtered = model.match(query_embedding, ref, "first", Bijective(kind, k, k))
            maps[f"bm-{kind}"] = frame_map(filtered["sm"])
    if "em" in branches:
        maps["em"] = frame_map(plain["em"])
    return MatchingScores(maps, float(kernel_k), int(topk_k))


def render_matching_figure(reference: npt.NDArray[np.uint8], mask: npt.NDArray[np.bool_],
                           query: npt.NDArray[np.uint8], scores: MatchingScores, *,
                           reference_index: int, query_index: int) -> Image.Image:
    """The Figure-4 row: reference frame with its mask, query frame, then the score map of each matcher.

    Each score map is normalised linearly to ``[0, 1]`` on its own (as in the paper's figure, so maps
    of different ranges compare by shape) and coloured with viridis (dark: low, yellow: high).
    Matchers the model lacks are grey panels.

    Args:
        reference: ``(H, W, 3) uint8`` reference frame.
        mask: ``(H, W)`` bool reference foreground.
        query: ``(H, W, 3) uint8`` query frame.
        scores: From :func:`matching_score_maps`.
        reference_index: Frame number of the reference, for its title.
        query_index: Frame number of the query, for its title.

    Returns:
        An RGB image of :func:`emvos.visualize.canvas.row_size` with 6 panels of
        :func:`~emvos.visualize.canvas.panel_size`.
    """
    panel = panel_size(query.shape[:2])

    def fit(image: npt.NDArray[np.uint8]) -> Image.Image:
        return Image.fromarray(image).resize(panel, Image.Resampling.BILINEAR)

    panels = [(f"reference (frame {reference_index})", fit(overlay(reference, mask.astype(np.uint8)))),
              (f"query (frame {query_index})", fit(query))]
    for matcher in MATCHERS:
        values = scores.maps[matcher]
        branch = "em" if matcher == "em" else "sm"
        image = (placeholder(panel, f"model has no {branch} branch") if values is None
                 else fit(colormap(normalise(values))))
        panels.append((scores.title(matcher), image))
    return titled_row(panels)
