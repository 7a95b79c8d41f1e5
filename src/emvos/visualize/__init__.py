"""Figures of the matching study: score maps of SM, BM and EM (paper Figure 4) and a
Figure-1-style toy; ``emvos visualize``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from emvos.lazy import lazy_exports

if TYPE_CHECKING:
    from emvos.visualize.scores import MATCHERS, MatchingScores, matching_score_maps, render_matching_figure
    from emvos.visualize.toy import ToyCase, ToyScores, render_toy_figure, toy_case, toy_scores

__all__ = [
    "MATCHERS",
    "MatchingScores",
    "ToyCase",
    "ToyScores",
    "matching_score_maps",
    "render_matching_figure",
    "render_toy_figure",
    "toy_case",
    "toy_scores",
]

__getattr__, __dir__ = lazy_exports(__name__, {
    "emvos.visualize.scores": ("MATCHERS", "MatchingScores", "matching_score_maps", "render_matching_figure"),
    "emvos.visualize.toy": ("ToyCase", "ToyScores", "render_toy_figure", "toy_case", "toy_scores"),
})
