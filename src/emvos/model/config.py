"""Typed configuration of the network and of test-time matching."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

#: Matching branches a network can be built with: surjective (``sm``) and equalized (``em``).
BRANCHES = ("sm", "em")
#: Branch sets, as written on the command line.
BRANCH_SETS = {"sm": ("sm",), "em": ("em",), "sm+em": ("sm", "em")}

#: Encoder strides the key projections can read (:attr:`ModelConfig.key_scales`).
KEY_SCALES = (4, 8, 16)

BijectiveKind = Literal["kernel", "topk"]
#: The paper's best test-time settings (Table 5): kernel std 32 / 32 grid cells, top-K 128 / 16.
BIJECTIVE_DEFAULTS: dict[str, tuple[float, float]] = {"kernel": (32.0, 32.0), "topk": (128.0, 16.0)}
#: The kernel std and top-K with the first frame as the only reference (their K1), e.g. for one-frame score maps.
DEFAULT_KERNEL_K = BIJECTIVE_DEFAULTS["kernel"][0]
DEFAULT_TOPK_K = int(BIJECTIVE_DEFAULTS["topk"][0])


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a network; stored in every emvos checkpoint.

    Attributes:
        encoder: registered encoder name (``densenet121``, ``efficientnet_lite0``, ``efficientnet_lite2``).
        branches: matching branches, a subset of :data:`BRANCHES` in that order; every branch
            matches the query against the first and the previous frame.
        key_channels: channels of each branch's key projection; ``None`` means half the encoder's
            stride-16 channels (the paper: 1024 -> 512).
        decoder_widths: working widths of the stride-4, 8 and 16 decoder levels; ``None`` means the
            encoder's stride-4 channel count at every level (the paper: 256).
        key_scales: the encoder strides whose features the key projections read, a subset of
            :data:`KEY_SCALES` with 16 (the paper: 16 alone). Finer features are average-pooled to
            stride 16 and stacked with the stride-16 ones; matching stays at stride 16.
    """

    encoder: str = "densenet121"
    branches: tuple[str, ...] = ("sm", "em")
    key_channels: int | None = None
    decoder_widths: tuple[int, int, int] | None = None
    key_scales: tuple[int, ...] = (16,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "branches", tuple(self.branches))
        object.__setattr__(self, "key_scales", tuple(int(s) for s in self.key_scales))
        if self.decoder_widths is not None:
            object.__setattr__(self, "decoder_widths", tuple(self.decoder_widths))
        if not self.branches or any(b not in BRANCHES for b in self.branches) or \
                list(self.branches) != [b for b in BRANCHES if b in self.branches]:
            raise ValueError(f"branches must be a non-empty ordered subset of {BRANCHES}, got {self.branches}")
        if self.decoder_widths is not None and len(self.decoder_widths) != 3:
            raise ValueError(f"decoder_widths needs 3 values (stride 4, 8, 16), got {self.decoder_widths}")
        if 16 not in self.key_scales or list(self.key_scales) != [s for s in KEY_SCALES if s in self.key_scales]:
            raise ValueError(f"key_scales must be an ordered subset of {KEY_SCALES} with 16, got {self.key_scales}")

    @property
    def matching(self) -> str:
        """The branch set as written on the command line (``sm``, ``em`` or ``sm+em``)."""
        return "+".join(self.branches)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (lists for tuples)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}")
        return cls(**data)


@dataclass(frozen=True)
class Bijective:
    """Test-time bijective replacement of surjective matching (paper §3.3, Table 5).

    Attributes:
        kind: ``kernel`` (KMN-style Gaussian around each reference pixel's best query pixel; ``k``
            is its standard deviation in stride-16 grid cells) or ``topk`` (BMVOS-style; ``k`` is the
            number of query pixels each reference pixel keeps).
        k_first: K1, the hyper-parameter used against the first frame.
        k_prev: K2, the hyper-parameter used against the previous frame.
    """

    kind: BijectiveKind
    k_first: float
    k_prev: float

    @classmethod
    def with_defaults(cls, kind: BijectiveKind, k_first: float | None = None,
                      k_prev: float | None = None) -> Bijective:
        """The paper's best K1/K2 for ``kind`` unless given."""
        d_first, d_prev = BIJECTIVE_DEFAULTS[kind]
        return cls(kind, d_first if k_first is None else k_first, d_prev if k_prev is None else k_prev)
