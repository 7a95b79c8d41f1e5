"""ONNX export of the per-frame step and a numpy + onnxruntime driver that runs it without PyTorch."""
