"""The EMVOS network (paper §3.5–3.6): frozen encoder, key projections, matching, decoder.

The network is stateless. :class:`emvos.inference.VideoPredictor` keeps the per-video state
(references and objects) for inference; :meth:`EMVOS.forward` unrolls a training clip.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emvos.model import matching
from emvos.model.config import Bijective, ModelConfig
from emvos.model.decoder import MASK_CHANNELS, Decoder, conv
from emvos.model.encoders import build_encoder
from emvos.model.encoders.base import Features

#: Reference frames every branch matches against: the first frame and the previous frame.
REFERENCES = ("first", "prev")


@dataclass
class FrameEmbedding:
    """What the network keeps of an encoded frame.

    Attributes:
        shared: the decoder's object-independent work, coarse to fine:
            ``(B, w16, h, w)``, ``(B, w8, 2h, 2w)``, ``(B, w4, 4h, 4w)``.
        keys: per branch, ``(B, C, h * w)`` keys (L2-normalised for ``sm``).
        grid: ``(h, w)``, the stride-16 grid.
    """

    shared: tuple[Tensor, Tensor, Tensor]
    keys: dict[str, Tensor]
    grid: tuple[int, int]


@dataclass
class Reference:
    """A reference frame's keys with the object masks that go with them.

    Attributes:
        keys: per branch, ``(B, C, Nr)``.
        mask: ``(B, O, 2, Nr)`` background/foreground probabilities of ``O`` objects at stride 16.
    """

    keys: dict[str, Tensor]
    mask: Tensor


class EMVOS(nn.Module):
    """Encoder, one key projection per matching branch, and the decoder.

    Args:
        config: architecture; see :class:`ModelConfig`.
        encoder_weights: passed to :func:`emvos.model.encoders.build_encoder` (``None`` when a
            checkpoint will provide the encoder's weights).
    """

    def __init__(self, config: ModelConfig, encoder_weights: str | Path | None = "imagenet") -> None:
        super().__init__()
        self.config = config
        self.encoder = build_encoder(config.encoder, encoder_weights)
        info = self.encoder.feature_info
        c16 = info.channels[2]
        key_channels = config.key_channels or c16 // 2
        key_inputs = sum(info.channels_at(s) for s in config.key_scales)
        self.keys = nn.ModuleDict({b: conv(key_inputs, key_channels, 1) for b in config.branches})
        widths = config.decoder_widths or (info.channels[0],) * 3
        score_channels = MASK_CHANNELS * len(REFERENCES) * len(config.branches)
        self.decoder = Decoder(info.channels, widths, score_channels)

    @property
    def stride(self) -> int:
        """Inputs must be padded to a multiple of this (the encoder's coarsest stride)."""
        return self.encoder.feature_info.stride

    def embed(self, images: Tensor) -> FrameEmbedding:
        """Encode frames and compute their keys and decoder reductions.

        Args:
            images: ``(B, 3, H, W)`` RGB in ``[0, 1]``, ``H`` and ``W`` multiples of :attr:`stride`.
        """
        with torch.no_grad():
            features = self.encoder(images)
        return self.embed_features(features)

    def embed_features(self, features: Features) -> FrameEmbedding:
        """Keys and decoder reductions of frames already encoded (e.g. features cached for training).

        Args:
            features: the encoder's ``s4`` / ``s8`` / ``s16`` maps of ``B`` frames.
        """
        keys = {}
        key_input = self.key_input(features)
        for branch, proj in self.keys.items():
            k = proj(key_input).flatten(2)
            keys[branch] = matching.normalize_keys(k) if branch == "sm" else k
        return FrameEmbedding(self.decoder.shared(features), keys, tuple(features.s16.shape[-2:]))

    def key_input(self, features: Features) -> Tensor:
        """What the key projections read: the features of :attr:`ModelConfig.key_scales` at stride 16.

        Args:
            features: the encoder's ``s4`` / ``s8`` / ``s16`` maps of ``B`` frames.

        Returns:
            ``(B, C, H/16, W/16)``: the finer maps average-pooled to stride 16, then the stride-16
            map, stacked along channels (the stride-16 map itself when it is the only scale).
        """
        if self.config.key_scales == (16,):
            return features.s16
        by_stride = dict(zip(self.encoder.feature_info.strides, features, strict=True))
        return torch.cat([by_stride[s] if s == 16 else F.avg_pool2d(by_stride[s], 16 // s)
                          for s in self.config.key_scales], dim=1)

    def with_key_scales(self, scales: tuple[int, ...]) -> EMVOS:
        """A copy whose key projections also read finer scales, computing the same keys as this network.

        The weights of the new input channels start at zero, so the copy's outputs equal this
        network's until it is trained (a fine-tuning that adds scales to a trained network).

        Args:
            scales: :attr:`ModelConfig.key_scales` of the copy, holding every scale of this network's.

        Raises:
            ValueError: ``scales`` leaves out a scale this network reads.
        """
        old = self.config.key_scales
        if not set(old) <= set(scales):
            raise ValueError(f"key_scales {tuple(scales)} must keep the network's {old}")
        wider = EMVOS(dataclasses.replace(self.config, key_scales=tuple(scales)), encoder_weights=None)
        state = self.state_dict()
        width = {s: self.encoder.feature_info.channels_at(s) for s in scales}
        for branch in self.config.branches:
            name = f"keys.{branch}.weight"
            weight = state[name]
            parts = dict(zip(old, weight.split([width[s] for s in old], dim=1), strict=True))
            state[name] = torch.cat([parts.get(s, weight.new_zeros(weight.shape[0], width[s], *weight.shape[2:]))
                                     for s in wider.config.key_scales], dim=1)
        wider.load_state_dict(state)
        return wider.to(next(self.parameters()).device)

    def match(self, query: FrameEmbedding, ref: Reference, role: str,
              bijective: Bijective | None = None) -> dict[str, Tensor]:
        """Match the query frame against one reference frame with every branch.

        Args:
            query: embedding of ``B`` query frames.
            ref: reference keys ``(B, C, Nr)`` and masks ``(B, O, 2, Nr)``.
            role: ``first`` or ``prev``; selects K1 or K2 of ``bijective``.
            bijective: replaces surjective matching at test time when given.

        Returns:
            Per branch, ``(B, O, 2, Nq)`` background/foreground score maps.
        """
        b, o, _, nr = ref.mask.shape
        mask = ref.mask.reshape(b, o * 2, nr)
        out = {}
        for branch in self.config.branches:
            row_filter = None
            if branch == "sm" and bijective is not None:
                k = bijective.k_first if role == "first" else bijective.k_prev
                row_filter = (partial(matching.kernel_filter, query_size=query.grid, sigma=k)
                              if bijective.kind == "kernel" else partial(matching.topk_filter, k=int(k)))
            affinity = matching.surjective_affinity if branch == "sm" else matching.equalized_affinity
            scores = matching.match_scores(ref.keys[branch], query.keys[branch], mask, affinity, row_filter)
            out[branch] = scores.view(b, o, 2, -1)
        return out

    def decode(self, query: FrameEmbedding, first: dict[str, Tensor], prev: dict[str, Tensor],
               prev_mask: Tensor) -> Tensor:
        """Decode the score maps of ``O`` objects in each of ``B`` frames.

        Args:
            query: embedding of the ``B`` query frames.
            first, prev: outputs of :meth:`match` against the first and the previous frame.
            prev_mask: ``(B, O, 2, Nq)`` previous-frame probabilities at stride 16.

        Returns:
            ``(B, O, 2, H, W)`` background/foreground logits.
        """
        b, o = prev_mask.shape[:2]
        h, w = query.grid
        # Channel order: per branch, first-frame then previous-frame (bg, fg) maps.
        scores = torch.cat([m[br] for br in self.config.branches for m in (first, prev)], dim=2)
        shared = query.shared if b == 1 or o == 1 else tuple(r.repeat_interleave(o, dim=0) for r in query.shared)
        logits = self.decoder(shared, scores.view(b * o, -1, h, w), prev_mask.reshape(b * o, 2, h, w))
        return logits.view(b, o, *logits.shape[1:])

    @torch.no_grad()
    def calibrate_equalized_keys(self, refs: Tensor | Features, queries: Tensor | Features, logit_std: float) -> float:
        """Rescale the equalized branch's key projection so that its logits have a given spread.

        An initialisation step for training (data-dependent, like LSUV). With Kaiming-initialised
        keys on raw encoder features, the dot products of eq. 4 can reach thousands, so the softmax
        over the query is one-hot and its gradient underflows to zero: the branch cannot learn.
        Keys scale linearly with the projection, logits quadratically, so weights and bias are
        multiplied by ``sqrt(logit_std / std)``.

        Args:
            refs: ``(B, 3, H, W)`` reference frames in ``[0, 1]``, or their encoder features.
            queries: ``(B, 3, H, W)`` query frames (e.g. the next frame of each clip), or their features.
            logit_std: the standard deviation wanted for the logits ``k_ref · k_query``.

        Returns:
            The factor applied to the projection.
        """
        if "em" not in self.keys:
            raise ValueError("this network has no equalized-matching branch")
        ref_keys, query_keys = (
            (self.embed(x) if isinstance(x, Tensor) else self.embed_features(x)).keys["em"] for x in (refs, queries))
        std = torch.bmm(ref_keys.transpose(1, 2), query_keys).std().item()
        factor = (logit_std / std) ** 0.5
        self.keys["em"].weight.mul_(factor)
        if self.keys["em"].bias is not None:
            self.keys["em"].bias.mul_(factor)
        return factor

    def forward(self, clip: Tensor | Features, first_mask: Tensor) -> Tensor:
        """Unroll a training clip: frame 0 is given, frames ``1..L-1`` are predicted in order.

        Each frame is matched against frame 0 and against the previous frame, whose mask is the
        network's own (soft, differentiable) prediction.

        Args:
            clip: ``(B, L, 3, H, W)`` RGB in ``[0, 1]``, ``H`` and ``W`` multiples of :attr:`stride`;
                or the encoder's features of the clip's frames (e.g. cached), each level
                ``(B, L, C, H/s, W/s)``, converted to ``first_mask``'s floating type if needed.
            first_mask: ``(B, H, W)`` binary mask of one object per clip (0/1).

        Returns:
            ``(B, L - 1, 2, H, W)`` logits for frames ``1..L-1``.
        """
        if isinstance(clip, Tensor):
            return self.unroll((self.embed(clip[:, t]) for t in range(clip.shape[1])), first_mask.to(clip.dtype))
        dtype = first_mask.dtype if first_mask.is_floating_point() else torch.get_default_dtype()
        return self.unroll((self.embed_features(Features(*(level[:, t].to(dtype) for level in clip)))
                            for t in range(clip.s16.shape[1])), first_mask.to(dtype))

    def unroll(self, frames: Iterable[FrameEmbedding], first_mask: Tensor) -> Tensor:
        """:meth:`forward` on frames already embedded (:meth:`embed` or :meth:`embed_features`).

        Args:
            frames: the embeddings of the clip's ``L`` frames in order, ``B`` clips each; taken one
                at a time, so a generator embeds each frame only when it is reached.
            first_mask: ``(B, H, W)`` binary mask of one object per clip (0/1; integer masks are
                taken as the default float type).

        Returns:
            ``(B, L - 1, 2, H, W)`` logits for frames ``1..L-1``.
        """
        frames = iter(frames)
        first_embedding = next(frames)
        if not first_mask.is_floating_point():
            first_mask = first_mask.to(torch.get_default_dtype())
        one_hot = torch.stack([1 - first_mask, first_mask], dim=1)  # (B, 2, H, W)
        mask16 = matching.downsample_mask(one_hot, self.stride).flatten(2).unsqueeze(1)  # (B, 1, 2, N)
        first = Reference(first_embedding.keys, mask16)
        prev = first
        outputs = []
        for query in frames:
            logits = self.decode(query, self.match(query, first, "first"), self.match(query, prev, "prev"),
                                 prev.mask)
            outputs.append(logits[:, 0])
            prob = F.softmax(logits[:, 0], dim=1)
            prev = Reference(query.keys, matching.downsample_mask(prob, self.stride).flatten(2).unsqueeze(1))
        return torch.stack(outputs, dim=1)
