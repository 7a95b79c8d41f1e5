"""Matching functions on small hand-built cases (paper §3.2–3.4)."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from emvos.model import matching


def _rand_keys(b: int, c: int, n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, c, n, generator=torch.Generator().manual_seed(seed))


def test_surjective_affinity_is_rescaled_cosine() -> None:
    ref = matching.normalize_keys(_rand_keys(2, 8, 5))
    qry = matching.normalize_keys(_rand_keys(2, 8, 7, seed=1))
    aff = matching.surjective_affinity(ref, qry)
    assert aff.shape == (2, 5, 7)
    assert aff.min() >= 0 and aff.max() <= 1
    cos = torch.nn.functional.cosine_similarity(ref[0, :, 2], qry[0, :, 4], dim=0)
    assert aff[0, 2, 4] == pytest.approx(float((cos + 1) / 2), abs=1e-6)
    assert torch.allclose(matching.surjective_affinity(ref, ref).diagonal(dim1=1, dim2=2), torch.ones(2, 5))


def test_equalized_affinity_rows_sum_to_one_over_the_query() -> None:
    aff = matching.equalized_affinity(_rand_keys(3, 16, 11), _rand_keys(3, 16, 13, seed=2))
    assert aff.shape == (3, 11, 13)
    assert torch.allclose(aff.sum(dim=2), torch.ones(3, 11), atol=1e-6)


def test_masked_max_matches_the_definition() -> None:
    aff = torch.rand(2, 6, 9)
    mask = torch.rand(2, 4, 6)
    expected = torch.empty(2, 4, 9)
    for b in range(2):
        for m in range(4):
            for q in range(9):
                expected[b, m, q] = max(aff[b, r, q] * mask[b, m, r] for r in range(6))
    assert torch.allclose(matching.masked_max(aff, mask), expected)


def test_masked_max_chunking_does_not_change_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    aff, mask = torch.rand(1, 50, 40), torch.rand(1, 14, 50)
    whole = matching.masked_max(aff, mask)
    monkeypatch.setattr(matching, "MASKED_MAX_CHUNK_ELEMENTS", 14 * 50 * 7)  # blocks of 7 of the 40 queries
    assert torch.equal(matching.masked_max(aff, mask), whole)


def test_topk_filter_keeps_k_best_query_pixels_per_reference_pixel() -> None:
    aff = torch.tensor([[[0.1, 0.9, 0.5, 0.7], [0.4, 0.2, 0.8, 0.3]]])
    out = matching.topk_filter(aff, 2)
    assert torch.equal(out, torch.tensor([[[0.1, 0.9, 0.1, 0.7], [0.4, 0.2, 0.8, 0.2]]]))
    assert torch.equal(matching.topk_filter(aff, 100), aff)


def test_kernel_filter_is_a_gaussian_around_each_rows_best_query_pixel() -> None:
    h, w = 3, 4
    aff = torch.full((1, 1, h * w), 0.5)
    aff[0, 0, 1 * w + 2] = 1.0  # best query pixel at (y=1, x=2)
    out = matching.kernel_filter(aff, (h, w), sigma=1.0)
    assert out[0, 0, 1 * w + 2] == pytest.approx(1.0)
    assert out[0, 0, 1 * w + 3] == pytest.approx(0.5 * torch.exp(torch.tensor(-0.5)).item())
    assert out[0, 0, 0] == pytest.approx(0.5 * torch.exp(torch.tensor(-2.5)).item())  # d^2 = 1 + 4


def test_equalized_matching_suppresses_a_distractor_that_surjective_matching_passes() -> None:
    """Figure 1: a query distractor resembles the target; in the reference frame it is background.

    Surjective matching lets the target's reference pixel vote for every look-alike, so the
    distractor's foreground score is almost the target's. Equalized matching makes that reference
    pixel split one unit of mass over the query, most of it going to the true target.
    """
    c = 8
    target = torch.zeros(c)
    target[0] = 4.0
    distractor = torch.zeros(c)
    distractor[0], distractor[1] = 4.0 * 0.9, 4.0 * 0.436  # cosine 0.9 with the target
    background = [torch.zeros(c) for _ in range(3)]
    for i, bg in enumerate(background):
        bg[2 + i] = 4.0
    ref = torch.stack([target, distractor, *background], dim=1)[None]  # (1, C, 5)
    qry = torch.stack([target, distractor, *background], dim=1)[None]
    fg = torch.tensor([1.0, 0, 0, 0, 0])
    mask = torch.stack([1 - fg, fg])[None]  # (1, 2, Nr): background, foreground

    sm = matching.masked_max(matching.surjective_affinity(matching.normalize_keys(ref),
                                                          matching.normalize_keys(qry)), mask)
    em = matching.masked_max(matching.equalized_affinity(ref, qry), mask)
    target_q, distractor_q = 0, 1
    assert sm[0, 1, distractor_q] > 0.9  # surjective: the distractor looks like foreground
    assert sm[0, 1, distractor_q] > sm[0, 0, distractor_q] - 0.1
    assert em[0, 1, distractor_q] < 0.25 * em[0, 1, target_q]  # equalized: suppressed
    assert em[0, 0, distractor_q] > em[0, 1, distractor_q]  # and background wins there


def test_gradients_flow_through_equalized_matching() -> None:
    ref = _rand_keys(1, 4, 6).requires_grad_()
    qry = _rand_keys(1, 4, 5, seed=3).requires_grad_()
    mask = torch.rand(1, 2, 6)
    matching.masked_max(matching.equalized_affinity(ref, qry), mask).sum().backward()
    assert ref.grad is not None and ref.grad.abs().sum() > 0
    assert qry.grad is not None and qry.grad.abs().sum() > 0


def test_downsample_mask_averages_stride_blocks() -> None:
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., :16, :8] = 1
    out = matching.downsample_mask(mask, 16)
    assert out.shape == (1, 1, 2, 2)
    assert out[0, 0, 0, 0] == pytest.approx(0.5) and out[0, 0, 1, 1] == 0


ROW_FILTERS = {"none": None, "kernel": partial(matching.kernel_filter, query_size=(3, 5), sigma=1.5),
               "topk": partial(matching.topk_filter, k=4)}


@pytest.mark.parametrize("branch", ["sm", "em"])
@pytest.mark.parametrize("row_filter", list(ROW_FILTERS), ids=list(ROW_FILTERS))
@pytest.mark.parametrize("chunk", [1 << 20, 40], ids=["one-block", "blocks-of-1-or-2-rows"])
def test_match_scores_equals_the_whole_pipeline(branch: str, row_filter: str, chunk: int,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(matching.MATCH_CHUNK_ELEMENTS, "cpu", chunk)  # 2 x 4 maps x 15 query pixels: 40 -> 1 row
    ref, qry = _rand_keys(2, 8, 11), _rand_keys(2, 8, 15, seed=4)
    if branch == "sm":
        ref, qry = matching.normalize_keys(ref), matching.normalize_keys(qry)
    affinity = matching.surjective_affinity if branch == "sm" else matching.equalized_affinity
    mask = torch.rand(2, 4, 11, generator=torch.Generator().manual_seed(5))
    whole = affinity(ref, qry)
    if ROW_FILTERS[row_filter] is not None:
        whole = ROW_FILTERS[row_filter](whole)
    expected = matching.masked_max(whole, mask)
    torch.testing.assert_close(matching.match_scores(ref, qry, mask, affinity, ROW_FILTERS[row_filter]), expected)


def test_gradients_flow_through_blockwise_matching(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(matching.MATCH_CHUNK_ELEMENTS, "cpu", 20)
    ref = _rand_keys(1, 4, 6).requires_grad_()
    qry = _rand_keys(1, 4, 5, seed=3).requires_grad_()
    matching.match_scores(ref, qry, torch.rand(1, 2, 6), matching.equalized_affinity).sum().backward()
    assert ref.grad is not None and ref.grad.abs().sum() > 0
    assert qry.grad is not None and qry.grad.abs().sum() > 0
