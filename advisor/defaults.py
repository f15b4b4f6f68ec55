"""Defaults the Python API and the command line share, so `tl-advise --help` and ``advise()`` cannot disagree.

Import-free on purpose: the command line reads it before anything heavy is loaded.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_BACKBONE = "efficientnet_lite0"  # embedded in the package: works offline
DEVICE_CHOICES = ("auto", "cpu", "cuda")
DEFAULT_DEVICE = "auto"
# What runs the advice's forward pass (advisor/measure/images/engines): ONNX Runtime where it can, else PyTorch.
ENGINE_CHOICES = ("auto", "onnx", "torch")
DEFAULT_ENGINE = "auto"
DEFAULT_SEED = 0
MAX_SEED = 2**32 - 1  # NumPy's and scikit-learn's seeds are 32-bit
# Embedding sample caps: the similarity signals were stable from ~8 images per class (similarity notes, point 6).
DEFAULT_PER_CLASS = 64
DEFAULT_TOTAL = 1024
# Images per forward pass when predicting (embedding: the engine's own, advisor/measure/images/engines).
DEFAULT_BATCH_SIZE = 32
DEFAULT_RUN_DIR = Path("tl-advise-runs")  # where `--run` writes when no --output-dir is given
# What the cache stores, one folder per kind under v<format>/ (advisor/measure/cache.py); `tl-advise cache` lists them.
EMBEDDINGS_KIND, BN_STATS_KIND, MEASUREMENTS_KIND, GRAPHS_KIND = "embeddings", "bnstats", "measurements", "graphs"
# The text advice's kinds: per-text embeddings, measurements, hidden-state moments, and the embedded text model
# extracted from its wheel (one folder per model).
TEXT_EMBEDDINGS_KIND, TEXT_MEASUREMENTS_KIND = "text_embeddings", "text_measurements"
TEXT_MOMENTS_KIND, MODELS_KIND = "text_moments", "models"
CACHE_KINDS = (EMBEDDINGS_KIND, BN_STATS_KIND, MEASUREMENTS_KIND, GRAPHS_KIND, TEXT_EMBEDDINGS_KIND,
               TEXT_MEASUREMENTS_KIND, TEXT_MOMENTS_KIND, MODELS_KIND)
