"""Feature matching between a reference frame and a query frame (paper §3.2–3.4), as pure functions.

Every function works on flattened key maps: a reference frame contributes ``Nr = h' * w'`` pixels and
the query frame ``Nq = h * w`` pixels, both at the encoder's stride-16 resolution. The common
pipeline is

1. an **affinity** ``A`` of shape ``(B, Nr, Nq)`` between every reference pixel and every query pixel:
   :func:`surjective_affinity` (cosine similarity mapped to ``[0, 1]``, eq. 1) or
   :func:`equalized_affinity` (dot product, softmax over the *query* pixels for each reference pixel,
   eq. 4–5);
2. optionally, for surjective matching at test time, a **bijective filter** applied to each reference
   pixel's row (eq. 3): :func:`kernel_filter` (KMN-style) or :func:`topk_filter` (BMVOS-style);
3. the **masked query-wise maximum** :func:`masked_max` (eq. 2): each reference pixel's row is weighted
   by that pixel's background / foreground probability, and each query pixel keeps the best score.

:func:`match_scores` runs the pipeline a block of reference pixels at a time: the network uses it.

Filters act on unweighted rows. Weighting a row by a non-negative mask value neither moves its
arg-max nor reorders it, so filtering before weighting equals filtering after it, and the filtered
affinity is shared by every object that uses the same reference frame.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

#: Elements of each temporary ``(B, M, Nr, block)`` product in :func:`masked_max`: the query pixels
#: are taken in blocks whose product stays in the CPU's cache (4 MiB in float32), about 4x faster
#: at 480p than materialising the whole ``(B, M, Nr, Nq)`` product, with identical results.
MASKED_MAX_CHUNK_ELEMENTS = 1 << 20
#: Elements of each temporary ``(B, M, rows, Nq)`` product in :func:`match_scores`: on the CPU 4 MiB in
#: float32, to stay in cache; on a GPU 256 MiB, to bound memory with few launches (one block at 480p).
MATCH_CHUNK_ELEMENTS = {"cpu": 1 << 20, "cuda": 1 << 26}


def normalize_keys(keys: Tensor) -> Tensor:
    """L2-normalise keys along the channel dimension.

    Args:
        keys: ``(B, C, N)`` or ``(B, C, h, w)``.

    Returns:
        Keys of the same shape with unit norm over ``C``.
    """
    return keys / keys.norm(dim=1, keepdim=True)


def surjective_affinity(ref_keys: Tensor, query_keys: Tensor) -> Tensor:
    """Cosine similarity mapped linearly to ``[0, 1]`` (eq. 1).

    Args:
        ref_keys: ``(B, C, Nr)``, already L2-normalised over ``C`` (:func:`normalize_keys`).
        query_keys: ``(B, C, Nq)``, already L2-normalised over ``C``.

    Returns:
        ``(B, Nr, Nq)`` with ``(cos + 1) / 2``.
    """
    # In place: two fewer (B, Nr, Nq) temporaries than (bmm + 1) / 2, the same rounding.
    return torch.bmm(ref_keys.transpose(1, 2), query_keys).add_(1).div_(2)


def equalized_affinity(ref_keys: Tensor, query_keys: Tensor) -> Tensor:
    """Equalized affinity (eq. 4–5): raw dot products, softmax over the query pixels.

    Every reference pixel distributes the same unit mass over the query frame, so a reference pixel
    that resembles many query pixels (a distractor) gives each of them a small score.

    Args:
        ref_keys: ``(B, C, Nr)`` unnormalised keys.
        query_keys: ``(B, C, Nq)`` unnormalised keys.

    Returns:
        ``(B, Nr, Nq)``; every row sums to 1.
    """
    return torch.softmax(torch.bmm(ref_keys.transpose(1, 2), query_keys), dim=2)


def kernel_filter(affinity: Tensor, query_size: tuple[int, int], sigma: float) -> Tensor:
    """KMN-style bijective filter: a Gaussian around each reference pixel's best query pixel.

    Args:
        affinity: ``(B, Nr, Nq)``.
        query_size: ``(h, w)`` with ``h * w == Nq``.
        sigma: standard deviation of the Gaussian, in query-grid cells.

    Returns:
        ``(B, Nr, Nq)``: each row multiplied by ``exp(-d^2 / (2 sigma^2))``, ``d`` being the distance
        from each query pixel to the row's arg-max.
    """
    h, w = query_size
    best = affinity.argmax(dim=2)  # (B, Nr)
    by, bx = (best // w).to(affinity.dtype), (best % w).to(affinity.dtype)
    ys = torch.arange(h, device=affinity.device, dtype=affinity.dtype).repeat_interleave(w)
    xs = torch.arange(w, device=affinity.device, dtype=affinity.dtype).repeat(h)
    dist2 = (ys.view(1, 1, -1) - by.unsqueeze(2)) ** 2 + (xs.view(1, 1, -1) - bx.unsqueeze(2)) ** 2
    return affinity * torch.exp(-dist2 / (2 * sigma**2))


def topk_filter(affinity: Tensor, k: int) -> Tensor:
    """BMVOS-style bijective filter: each reference pixel keeps only its ``k`` best query pixels.

    The other entries of the row are lowered to the row's minimum, as in BMVOS, so they can never
    win the query-wise maximum over a kept entry of another reference pixel of the same score.

    Args:
        affinity: ``(B, Nr, Nq)``.
        k: number of query pixels each reference pixel keeps (clipped to ``Nq``).

    Returns:
        ``(B, Nr, Nq)``.
    """
    k = min(int(k), affinity.shape[2])
    cut = affinity.topk(k, dim=2).values[:, :, -1:]
    floor = affinity.amin(dim=2, keepdim=True)
    return torch.where(affinity < cut, floor, affinity)


def masked_max(affinity: Tensor, ref_mask: Tensor) -> Tensor:
    """Weight the affinity's rows by reference masks and take the maximum over reference pixels (eq. 2).

    Args:
        affinity: ``(B, Nr, Nq)``.
        ref_mask: ``(B, M, Nr)`` probabilities at the reference pixels, ``M`` maps per frame (for
            example background and foreground of each of ``O`` objects, ``M = 2 * O``).

    Returns:
        ``(B, M, Nq)`` score maps: ``out[b, m, q] = max_r affinity[b, r, q] * ref_mask[b, m, r]``.
    """
    b, nr, nq = affinity.shape
    m = ref_mask.shape[1]
    block = max(1, MASKED_MAX_CHUNK_ELEMENTS // max(1, b * m * nr))  # query pixels per chunk
    weights = ref_mask.unsqueeze(3)  # (B, M, Nr, 1)
    chunks = [(affinity[:, None, :, j:j + block] * weights).amax(dim=2) for j in range(0, nq, block)]
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=2)


def match_scores(ref_keys: Tensor, query_keys: Tensor, ref_mask: Tensor,
                 affinity: Callable[[Tensor, Tensor], Tensor],
                 row_filter: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """``masked_max(row_filter(affinity(ref_keys, query_keys)), ref_mask)``, a block of reference pixels at a time.

    Every step of the pipeline works on whole rows (one reference pixel against every query pixel):
    the affinities (the equalized softmax runs along a row), the bijective filters and the row's
    weighting. So a block of rows can be computed, filtered, weighted and reduced while it is in the
    CPU's cache, and the blocks' maxima combined: the same numbers as the whole ``(B, Nr, Nq)``
    affinity, without writing it to memory and reading it back three times. Differentiable.

    Args:
        ref_keys: ``(B, C, Nr)`` keys of the reference frame, prepared as ``affinity`` expects.
        query_keys: ``(B, C, Nq)`` keys of the query frame.
        ref_mask: ``(B, M, Nr)`` probabilities at the reference pixels.
        affinity: :func:`surjective_affinity`, :func:`equalized_affinity` or another map of
            ``(B, C, rows)`` and ``(B, C, Nq)`` keys to ``(B, rows, Nq)`` row-wise affinities.
        row_filter: a bijective filter of ``(B, rows, Nq)`` affinities, for example
            ``partial(topk_filter, k=...)``.

    Returns:
        ``(B, M, Nq)`` score maps.
    """
    b, _, nr = ref_keys.shape
    m, nq = ref_mask.shape[1], query_keys.shape[2]
    chunk = MATCH_CHUNK_ELEMENTS.get(ref_keys.device.type, MATCH_CHUNK_ELEMENTS["cpu"])
    rows = max(1, chunk // max(1, b * m * nq))
    scores = None
    for r0 in range(0, nr, rows):
        block = affinity(ref_keys[:, :, r0:r0 + rows], query_keys)  # (B, rows, Nq)
        if row_filter is not None:
            block = row_filter(block)
        part = (block[:, None] * ref_mask[:, :, r0:r0 + rows, None]).amax(dim=2)  # (B, M, Nq)
        scores = part if scores is None else torch.maximum(scores, part)
    if scores is None:
        raise ValueError("the reference frame has no pixels")
    return scores


def downsample_mask(mask: Tensor, stride: int) -> Tensor:
    """Average-pool full-resolution probabilities to the matching resolution.

    Args:
        mask: ``(B, M, H, W)``, ``H`` and ``W`` multiples of ``stride``.
        stride: the encoder's stride of the matched features (16).

    Returns:
        ``(B, M, H / stride, W / stride)``.
    """
    return F.avg_pool2d(mask, stride)
