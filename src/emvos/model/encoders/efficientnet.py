"""EfficientNet-Lite0 encoder (placeholder: being written)."""
