"""Measuring images: the backbones, the engines that run them (ONNX Runtime, PyTorch), the preprocessing and
the one embedding pass, and the similarity signals computed from it."""
