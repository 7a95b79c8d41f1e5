"""A function of fixed-shape tensors captured once as a CUDA graph and replayed: :class:`StaticGraph`."""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

#: Eager calls before capture: cuDNN's autotuning and the libraries' lazy set-up must not be captured.
WARMUP_CALLS = 2

GraphFn = Callable[[list[Tensor]], list[Tensor]]


class StaticGraph:
    """``fn`` captured as a CUDA graph on its first inputs' shapes, then replayed on new values.

    A propagated frame of the paper model runs about a thousand PyTorch operations (the 87
    convolutions of its DenseNet-121 encoder and their normalisations, matching, the decoder); at
    video frame sizes the GPU runs many of them faster than Python launches them. Replayed from a
    graph, the frame's work is one launch. The graph reads fixed input buffers and writes fixed
    output buffers: each call copies its inputs in and returns the output buffers, **which the
    next call overwrites** (copy what must outlive it).

    Tensors that ``fn`` reads without taking them as inputs (weights, a video's references) are read
    at their addresses: they must stay alive and unchanged while the graph is in use. Whoever keeps
    the graph should not be kept alive by ``fn`` (a reference cycle): the graph's GPU memory would
    wait for Python's cycle collector.

    On the CPU there is nothing to capture: each call runs ``fn`` on the copied inputs.

    Args:
        fn: maps a list of tensors to a list of tensors of shapes fixed by the inputs', with no
            host synchronisation (no ``.item()``, no tensors made from Python values on the device);
            its outputs must not be views of its inputs.
        inputs: example inputs: they set the shapes and dtypes of every call's inputs, and the device.
    """

    def __init__(self, fn: GraphFn, inputs: Sequence[Tensor], device: torch.device) -> None:
        self.fn = fn
        self.device = device
        self.inputs = [t.to(device, copy=True) for t in inputs]
        self.graph: torch.cuda.CUDAGraph | None = None
        self.outputs: list[Tensor] = []
        if device.type == "cuda":
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(WARMUP_CALLS):
                    fn(self.inputs)
            torch.cuda.current_stream(device).wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            # Python's cycle collector must not run during the capture: freeing another graph (of a
            # video no longer referenced) is not permitted while a stream is capturing.
            gc.collect()
            collecting = gc.isenabled()
            gc.disable()
            try:
                # Only this thread's calls are checked: the frame reader and the PNG writers run beside it.
                with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
                    self.outputs = fn(self.inputs)
            finally:
                if collecting:
                    gc.enable()
            owned = {t.untyped_storage().data_ptr() for t in self.inputs}
            if any(t.untyped_storage().data_ptr() in owned for t in self.outputs):
                raise ValueError("a graph's outputs must not share memory with its inputs: the next call's "
                                 "inputs would overwrite them; return copies")

    @property
    def captured(self) -> bool:
        """Whether calls replay a CUDA graph (else they run ``fn`` eagerly)."""
        return self.graph is not None

    def __call__(self, inputs: Sequence[Tensor]) -> list[Tensor]:
        """Copy ``inputs`` into the graph's buffers, run it, and return its output buffers.

        Raises:
            ValueError: an input's count, shape or dtype differs from the captured ones.
        """
        if len(inputs) != len(self.inputs):
            raise ValueError(f"the graph takes {len(self.inputs)} inputs, got {len(inputs)}")
        for i, (buffer, value) in enumerate(zip(self.inputs, inputs, strict=True)):
            if value.shape != buffer.shape or value.dtype != buffer.dtype:
                raise ValueError(f"graph input {i}: captured as {buffer.dtype} {tuple(buffer.shape)}, "
                                 f"got {value.dtype} {tuple(value.shape)}")
            buffer.copy_(value)
        if self.graph is None:
            return self.fn(self.inputs)
        self.graph.replay()
        return self.outputs
