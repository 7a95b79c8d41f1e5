"""Export the per-frame step of a network as ONNX graphs (:mod:`emvos.onnx.files` describes them).

The network's own modules are traced with ``torch.onnx``: the encoder and its key projections, the
matching of both references and the decoder, the aggregation of the objects and the next frame's
reference mask. The frame's resizing and padding and the labels' resizing back are ONNX operators
with the semantics of PyTorch's (bicubic / bilinear with ``align_corners=False``, reflect padding),
built here and joined to the traced graphs. The number of objects, the frame size and the resolution
stay dynamic.

Two network details are fixed at export:

* TensorFlow "SAME" convolutions (EfficientNet-Lite0) pad by an amount that depends on the parity of
  the input size. Frames are padded to a multiple of the stride, so every stride-2 convolution sees
  an even size and gets the same padding: each becomes a plain convolution with that padding.
* Matching runs a block of reference pixels at a time on the CPU; the graphs take all rows at once
  (the same numbers) so that the block count does not depend on the traced size.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from collections.abc import Iterator
from pathlib import Path

import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, compose, helper
from torch import Tensor, nn

from emvos import __version__
from emvos.errors import ParameterError
from emvos.inference.aggregate import aggregate
from emvos.inference.predictor import load_network
from emvos.inference.settings import checkpoint_file
from emvos.io.files import atomic_path, write_text_atomically
from emvos.model import matching
from emvos.model.encoders.efficientnet import SameConv2d
from emvos.model.network import EMVOS, FrameEmbedding, Reference
from emvos.onnx.files import FORMAT_VERSION, GRAPHS, MANIFEST, file_sha256

#: ONNX operator set of the graphs (onnxruntime 1.16 and later run it).
OPSET = 17
#: The decoder's three maps, coarse to fine.
SHARED = ("shared16", "shared8", "shared4")


def _plain_same_convs(model: EMVOS) -> None:
    """Replace every :class:`SameConv2d` by a convolution with the padding it uses on even input sizes."""
    for name, module in list(model.named_modules()):
        if isinstance(module, SameConv2d):
            weight, padding = module.weight_and_padding((2 * module.stride[0], 2 * module.stride[1]))
            plain = nn.Conv2d(module.in_channels, module.out_channels, tuple(weight.shape[-2:]), module.stride,
                              padding, groups=module.groups, bias=module.bias is not None)
            with torch.no_grad():
                plain.weight.copy_(weight)
                if module.bias is not None:
                    plain.bias.copy_(module.bias)
            parent, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent), leaf, plain)


@contextlib.contextmanager
def _whole_matching() -> Iterator[None]:
    """Matching in one block of rows, whatever the size (see the module's notes)."""
    saved = dict(matching.MATCH_CHUNK_ELEMENTS)
    matching.MATCH_CHUNK_ELEMENTS.update({device: 1 << 62 for device in saved})
    try:
        yield
    finally:
        matching.MATCH_CHUNK_ELEMENTS.update(saved)


class _Encoder(nn.Module):
    """``(1, 3, H'', W'')`` padded frame in ``[0, 1]`` -> the three decoder maps, then the keys of each branch."""

    def __init__(self, model: EMVOS) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        embedding = self.model.embed(image)
        return (*embedding.shared, *embedding.keys.values())


class _Step(nn.Module):
    """Match the query against both references and decode: ``(O, 2, H'', W'')`` probabilities."""

    def __init__(self, model: EMVOS) -> None:
        super().__init__()
        self.model = model
        self.branches = list(model.config.branches)

    def forward(self, *tensors: Tensor) -> Tensor:
        n = len(self.branches)
        shared, query_keys = tensors[:3], tensors[3:3 + n]
        first_keys, first_mask = tensors[3 + n:3 + 2 * n], tensors[3 + 2 * n]
        prev_keys, prev_mask = tensors[4 + 2 * n:4 + 3 * n], tensors[4 + 3 * n]
        query = FrameEmbedding((shared[0], shared[1], shared[2]), dict(zip(self.branches, query_keys, strict=True)),
                               (shared[0].shape[-2], shared[0].shape[-1]))
        first = self.model.match(query, Reference(dict(zip(self.branches, first_keys, strict=True)), first_mask),
                                 "first")
        prev = self.model.match(query, Reference(dict(zip(self.branches, prev_keys, strict=True)), prev_mask),
                                "prev")
        return F.softmax(self.model.decode(query, first, prev, prev_mask)[0], dim=1)


class _Finish(nn.Module):
    """``(O, 2, H'', W'')`` probabilities -> ``(O + 1, H'', W'')`` aggregated, and the next frame's
    ``(1, O, 2, N)`` reference mask."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, probs: Tensor) -> tuple[Tensor, Tensor]:
        agg = aggregate(probs)
        fg = agg[1:]
        prev_mask = matching.downsample_mask(torch.stack([1 - fg, fg], dim=1), self.stride)
        return agg, prev_mask.flatten(2)[None]


def _trace(module: nn.Module, args: tuple[Tensor, ...], path: Path, inputs: list[str], outputs: list[str],
           dynamic: dict[str, dict[int, str]]) -> onnx.ModelProto:
    """Trace ``module`` to ONNX (TorchScript exporter) and load the result."""
    torch.onnx.export(module, args, str(path), dynamo=False, opset_version=OPSET, input_names=inputs,
                      output_names=outputs, dynamic_axes=dynamic, do_constant_folding=True)
    return onnx.load(str(path))


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
           name: str, like: onnx.ModelProto) -> onnx.ModelProto:
    """A model of ``nodes`` with the opset and IR version of ``like`` (so that :mod:`onnx.compose` joins them)."""
    graph = helper.make_graph(nodes, name, inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = like.ir_version
    return model


def _frame_graph(like: onnx.ModelProto) -> onnx.ModelProto:
    """``frame (H, W, 3) uint8`` -> ``image (1, 3, H'', W'')``: PyTorch's ``/ 255``, bicubic resize
    (``align_corners=False``, a = -0.75) to ``sizes`` and reflect padding by ``pads``."""
    const = helper.make_tensor
    nodes = [
        helper.make_node("Cast", ["frame"], ["frame_f"], to=TensorProto.FLOAT),
        helper.make_node("Constant", [], ["k255"], value=const("k255", TensorProto.FLOAT, [], [255.0])),
        helper.make_node("Div", ["frame_f", "k255"], ["frame_01"]),
        helper.make_node("Transpose", ["frame_01"], ["chw"], perm=[2, 0, 1]),
        helper.make_node("Constant", [], ["axis0"], value=const("axis0", TensorProto.INT64, [1], [0])),
        helper.make_node("Unsqueeze", ["chw", "axis0"], ["nchw"]),
        helper.make_node("Resize", ["nchw", "", "", "sizes"], ["resized"], mode="cubic", cubic_coeff_a=-0.75,
                         coordinate_transformation_mode="pytorch_half_pixel"),
        helper.make_node("Pad", ["resized", "pads"], ["image"], mode="reflect"),
    ]
    inputs = [helper.make_tensor_value_info("frame", TensorProto.UINT8, ["H", "W", 3]),
              helper.make_tensor_value_info("sizes", TensorProto.INT64, [4]),
              helper.make_tensor_value_info("pads", TensorProto.INT64, [8])]
    outputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, "Hp", "Wp"])]
    return _model(nodes, inputs, outputs, "frame", like)


def _labels_graph(like: onnx.ModelProto) -> onnx.ModelProto:
    """``agg (O + 1, H'', W'')`` -> ``labels (H, W) uint8``: the padding cropped, PyTorch's bilinear
    resize (``align_corners=False``) to ``size``, the most probable channel."""
    const = helper.make_tensor
    nodes = [
        helper.make_node("Constant", [], ["axis0"], value=const("axis0", TensorProto.INT64, [1], [0])),
        helper.make_node("Constant", [], ["hw_axes"], value=const("hw_axes", TensorProto.INT64, [2], [2, 3])),
        helper.make_node("Unsqueeze", ["agg", "axis0"], ["agg4"]),
        helper.make_node("Slice", ["agg4", "crop_starts", "crop_ends", "hw_axes"], ["cropped"]),
        helper.make_node("Shape", ["cropped"], ["batch_channels"], start=0, end=2),
        helper.make_node("Concat", ["batch_channels", "size"], ["sizes"], axis=0),
        helper.make_node("Resize", ["cropped", "", "", "sizes"], ["restored"], mode="linear",
                         coordinate_transformation_mode="pytorch_half_pixel"),
        helper.make_node("ArgMax", ["restored"], ["slots"], axis=1, keepdims=0),
        helper.make_node("Squeeze", ["slots", "axis0"], ["slots2"]),
        helper.make_node("Cast", ["slots2"], ["labels"], to=TensorProto.UINT8),
    ]
    inputs = [helper.make_tensor_value_info("agg", TensorProto.FLOAT, ["C", "Hp", "Wp"]),
              helper.make_tensor_value_info("crop_starts", TensorProto.INT64, [2]),
              helper.make_tensor_value_info("crop_ends", TensorProto.INT64, [2]),
              helper.make_tensor_value_info("size", TensorProto.INT64, [2])]
    outputs = [helper.make_tensor_value_info("labels", TensorProto.UINT8, ["H", "W"])]
    return _model(nodes, inputs, outputs, "labels", like)


def _save(model: onnx.ModelProto, path: Path) -> None:
    onnx.checker.check_model(model)
    with atomic_path(path) as temporary:
        onnx.save(model, str(temporary))


def export_onnx(out: str | os.PathLike[str], checkpoint: str | os.PathLike[str] | None = None) -> Path:
    """Export the per-frame step of a network to ONNX graphs in folder ``out``.

    Args:
        out: folder to write :data:`~emvos.onnx.files.GRAPHS` and the manifest to (created if needed;
            files of an earlier export are replaced).
        checkpoint: an emvos checkpoint or the official EMVOS weights; ``None``: the shipped model.

    Returns:
        ``out``.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ParameterError("out", f"{out} is a file; give a folder")
    source = checkpoint_file(checkpoint)
    network = copy.deepcopy(load_network(checkpoint).float().eval())
    _plain_same_convs(network)
    branches = list(network.config.branches)
    stride = network.stride
    out.mkdir(parents=True, exist_ok=True)
    keys = [f"key_{b}" for b in branches]
    h = w = 4  # the traced stride-16 grid; every size stays dynamic
    with torch.no_grad(), _whole_matching():
        image = torch.rand(1, 3, h * stride, w * stride)
        embedding = _Encoder(network)(image)
        encoder = _trace(_Encoder(network), (image,), out / "encoder.traced.onnx", ["image"], [*SHARED, *keys],
                         {"image": {2: "Hp", 3: "Wp"}, "shared16": {2: "h", 3: "w"}, "shared8": {2: "h8", 3: "w8"},
                          "shared4": {2: "h4", 3: "w4"}, **{k: {2: "N"} for k in keys}})
        objects = 2
        first_mask = torch.rand(1, objects, 2, h * w)
        prev_mask = torch.rand(1, objects, 2, h * w)
        step_inputs = [*SHARED, *keys, *(f"first_{k}" for k in keys), "first_mask", *(f"prev_{k}" for k in keys),
                       "prev_mask"]
        dynamic = {"shared16": {2: "h", 3: "w"}, "shared8": {2: "h8", 3: "w8"}, "shared4": {2: "h4", 3: "w4"},
                   **{k: {2: "N"} for k in keys}, **{f"first_{k}": {2: "Nf"} for k in keys},
                   "first_mask": {1: "O", 3: "Nf"}, **{f"prev_{k}": {2: "N"} for k in keys},
                   "prev_mask": {1: "O", 3: "N"}, "probs": {0: "O", 2: "Hp", 3: "Wp"}}
        step_args = (*embedding, *embedding[3:], first_mask, *embedding[3:], prev_mask)
        step = _trace(_Step(network), step_args, out / "step.traced.onnx", step_inputs, ["probs"], dynamic)
        probs = _Step(network)(*step_args)
        finish = _trace(_Finish(stride), (probs,), out / "finish.traced.onnx", ["probs"], ["agg", "prev_mask"],
                        {"probs": {0: "O", 2: "Hp", 3: "Wp"}, "agg": {0: "C", 1: "Hp", 2: "Wp"},
                         "prev_mask": {1: "O", 3: "N"}})
    encoder = compose.merge_models(_frame_graph(encoder), encoder, io_map=[("image", "image")])
    finish = compose.merge_models(finish, _labels_graph(finish), io_map=[("agg", "agg")])
    for name, model in zip(GRAPHS, (encoder, step, finish), strict=True):
        _save(model, out / name)
        (out / name.replace(".onnx", ".traced.onnx")).unlink()
    manifest = {"format_version": FORMAT_VERSION, "emvos_version": __version__, "branches": branches,
                "stride": stride, "config": network.config.to_dict(), "source": source.name,
                "source_sha256": file_sha256(source), "opset": OPSET}
    write_text_atomically(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return out
