"""Preparing a network for inference: a copy that computes the same masks faster.

The reference network (:mod:`emvos.model`) is what training runs and what the paper describes;
:func:`prepare_for_inference` returns a copy of it with BatchNorm folded into the convolutions
before it, convolutions computed with their ReLUs, on the CPU the decoder's wide levels by
Winograd F(6x6, 3x3) and a matrix-product upsampling, channels-last memory, and optionally
``torch.compile``. The network passed in is left as it is.
"""

from __future__ import annotations

import copy

import torch

from emvos.model.network import EMVOS
from emvos.runtime import allow_compiled_shapes

#: Shapes (resolution x object count) a compiled network is compiled for before Dynamo gives up on it.
COMPILED_SHAPES = 64


def prepare_for_inference(model: EMVOS, device: torch.device, *, optimize: bool = True,
                          compile: bool = False) -> EMVOS:
    """The network to run on ``device``: ``model`` itself, or a prepared copy.

    Args:
        model: the reference network, already on ``device`` and in evaluation mode.
        device: where it runs (the CPU gets the CPU-specific convolution algorithms).
        optimize: fold, fuse, use the CPU algorithms and channels-last (same results up to float
            rounding).
        compile: also compile the encoder and decoder with ``torch.compile`` (on the CPU with
            Inductor's freezing, which pre-packs the weights for its kernels); raises PyTorch's
            process-wide limit of compiled shapes to :data:`COMPILED_SHAPES`.

    Returns:
        ``model`` when neither is asked for, else a copy.
    """
    if not (optimize or compile):
        return model
    model = copy.deepcopy(model)
    if optimize:
        model.encoder.fuse()
        model.decoder.fuse()
        if device.type == "cpu":  # GPU libraries choose their own convolution algorithms
            model.decoder.use_cpu_algorithms()
        model.to(memory_format=torch.channels_last)
    if compile:
        # Each resolution and object count is a shape of its own; past Dynamo's limit (8 by default)
        # the network would silently run uncompiled.
        allow_compiled_shapes(COMPILED_SHAPES)
        # Freezing treats the weights as constants: it folds and pre-packs them for the CPU's kernels.
        options = {"freezing": True} if device.type == "cpu" else None
        model.encoder.compile(options=options)
        model.decoder.compile(options=options)
    return model
