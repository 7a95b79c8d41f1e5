"""Preparing a network for inference: a copy that computes the same masks faster.

The reference network (:mod:`emvos.model`) is what training runs and what the paper describes;
nothing in it knows about this module. :func:`prepare_for_inference` returns a copy of it with

* every BatchNorm that follows a convolution folded into it (PyTorch's
  :func:`~torch.nn.utils.fusion.fuse_conv_bn_eval`),
* channels-last memory format,
* optionally ``torch.compile`` with Inductor's freezing on the CPU.

Which layers follow which is found by running the network once on a small input and watching
which module receives which module's output (:func:`producer_consumer_pairs`), not from a list of
layer names kept beside each architecture. The network passed in is left as it is.

``python benchmarks/inference_paths.py`` times the reference against the prepared copy. No
hand-written kernel is used: computing each convolution with its ReLU6 in one oneDNN call saved
nothing measurable over this on the shipped model (``docs/inference-paths.md``).
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from emvos.model.network import EMVOS
from emvos.runtime import allow_compiled_shapes

#: Shapes (resolution x object count) a compiled network is compiled for before Dynamo gives up on it.
COMPILED_SHAPES = 64


def prepare_for_inference(model: EMVOS, device: torch.device, *, optimize: bool = True,
                          compile: bool = False) -> EMVOS:
    """The network to run on ``device``: ``model`` itself, or a prepared copy.

    Args:
        model: the reference network, already on ``device`` and in evaluation mode.
        device: where it runs.
        optimize: fold BatchNorm into the convolutions and use channels-last memory format (same
            results up to float rounding).
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
        fold_batchnorms(model)
        model.to(memory_format=torch.channels_last)
    if compile:
        compile_network(model, device)
    return model


def fold_batchnorms(model: EMVOS) -> int:
    """Fold every evaluation-mode BatchNorm whose input is a convolution's output into that
    convolution, in place (the BatchNorm becomes the activation it carries, or an identity).

    timm's ``BatchNormAct2d`` (a BatchNorm with an activation inside) is replaced by its activation.
    The folded BatchNorms leave :meth:`state_dict`: fold only a copy that will not be saved.

    Args:
        model: the network (in evaluation mode).

    Returns:
        How many BatchNorms were folded.
    """
    folded = 0
    for conv_name, bn_name in producer_consumer_pairs(model, nn.Conv2d, nn.BatchNorm2d):
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
        after = _activation_inside(bn)
        if after is None:
            continue
        _replace(model, conv_name, fuse_conv_bn_eval(conv, bn))
        _replace(model, bn_name, after)
        folded += 1
    return folded


def compile_network(model: EMVOS, device: torch.device) -> None:
    """Compile the encoder and the decoder with ``torch.compile``, in place (on the CPU with
    Inductor's freezing, which treats the weights as constants: it folds and pre-packs them);
    raises PyTorch's process-wide limit of compiled shapes to :data:`COMPILED_SHAPES`, since each
    resolution and object count is a shape of its own and past Dynamo's limit (8 by default) the
    network would silently run uncompiled."""
    allow_compiled_shapes(COMPILED_SHAPES)
    options = {"freezing": True} if device.type == "cpu" else None
    model.encoder.compile(options=options)
    model.decoder.compile(options=options)


def producer_consumer_pairs(model: EMVOS, producer: type[nn.Module] | tuple[type[nn.Module], ...],
                            consumer: type[nn.Module] | tuple[type[nn.Module], ...]) -> list[tuple[str, str]]:
    """Names of the ``(producer, consumer)`` modules where the consumer's input is the producer's
    output, found by running ``model`` once on a two-frame clip of random pixels.

    A producer whose output reaches more than one consumer module is left out. An output also used
    by a function rather than a module (a residual sum, say) cannot be seen this way; no encoder or
    decoder here feeds a convolution's output both to a BatchNorm or activation and elsewhere, and
    ``tests/test_optimize.py`` checks the prepared network against the reference on a real video.

    Args:
        model: the network (in evaluation mode).
        producer, consumer: the module types to look for.

    Returns:
        ``(producer name, consumer name)`` pairs, names as :meth:`~torch.nn.Module.named_modules` gives them.
    """
    outputs: dict[int, tuple[str, Tensor]] = {}  # id of an output -> its producer (the tensor kept alive)
    found: list[tuple[str, str]] = []

    def produced(name: str) -> Callable[[nn.Module, tuple[object, ...], object], None]:
        def hook(module: nn.Module, args: tuple[object, ...], output: object) -> None:
            if isinstance(output, Tensor):
                outputs[id(output)] = (name, output)
        return hook

    def consumed(name: str) -> Callable[[nn.Module, tuple[object, ...]], None]:
        def hook(module: nn.Module, args: tuple[object, ...]) -> None:
            if args and isinstance(args[0], Tensor) and id(args[0]) in outputs and outputs[id(args[0])][1] is args[0]:
                found.append((outputs[id(args[0])][0], name))
        return hook

    handles = []
    for name, module in model.named_modules():
        if isinstance(module, producer):
            handles.append(module.register_forward_hook(produced(name)))
        if isinstance(module, consumer):
            handles.append(module.register_forward_pre_hook(consumed(name)))
    side = 4 * model.stride
    parameter = next(model.parameters())
    clip = torch.rand(1, 2, 3, side, side, generator=torch.Generator().manual_seed(0)).to(parameter)
    try:
        with torch.no_grad():
            model(clip, torch.zeros(1, side, side, device=parameter.device))
    finally:
        for handle in handles:
            handle.remove()
    uses = Counter(name for name, _ in dict.fromkeys(found))
    return [(p, c) for p, c in dict.fromkeys(found) if uses[p] == 1]


def _activation_inside(bn: nn.BatchNorm2d) -> nn.Module | None:
    """What remains of ``bn`` once folded: its activation (timm's ``BatchNormAct2d``), an identity
    (a plain BatchNorm), or ``None`` when it does more than normalise and activate."""
    if type(bn) is nn.BatchNorm2d:
        return nn.Identity()
    drop, act = getattr(bn, "drop", None), getattr(bn, "act", None)
    if isinstance(drop, nn.Identity) and isinstance(act, nn.Module) and {n for n, _ in bn.named_children()} == {"drop",
                                                                                                         "act"}:
        return act
    return None


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` where ``model``'s submodule ``name`` was."""
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent), leaf, module)
