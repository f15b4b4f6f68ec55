"""Which engine runs the advice's forward pass: ONNX Runtime on the exported graph, or PyTorch.

``--engine auto`` (the default) uses ONNX Runtime on the CPU: the graph is exported once per backbone,
weights and library versions into the cache and checked against eager PyTorch there, so a cold advice
afterwards never imports torch. It falls back to PyTorch, with one log line, where ONNX Runtime is not
installed, a GPU is asked for or visible, the cache is off, or the backbone does not export.
``--engine onnx`` makes each of those an error instead; ``--engine torch`` never tries.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from tl_advise.advisor.defaults import ENGINE_CHOICES
from tl_advise.advisor.measure.cache import ArrayCache
from tl_advise.advisor.measure.images.embedding import BNReference, EmbeddingEngine
from tl_advise.advisor.measure.images.engines.graph_cache import GraphCache, GraphRecord, graph_key
from tl_advise.advisor.timing import StepTimer
from tl_advise.schema.errors import BackboneError, ConfigError

if TYPE_CHECKING:
    from tl_advise.advisor.measure.images.backbones import Backbone

logger = logging.getLogger(__name__)

__all__ = ["ENGINE_CHOICES", "OpenedEngine", "check_engine", "open_engine"]


def _gpu_visible() -> bool:
    """An NVIDIA GPU this process could use, seen without importing torch (``--device auto``)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def _why_not_onnx(device: str, cache_enabled: bool, choice: str) -> str | None:
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed (pip install onnxruntime)"
    if device.startswith("cuda"):
        return f"--device {device}: the ONNX Runtime engine runs on the CPU"
    if device == "auto" and _gpu_visible():
        return "a GPU is visible and PyTorch embeds on it (--device cpu keeps the advice on the CPU)"
    if not cache_enabled and choice == "auto":
        return "the cache is off, so an exported graph could not be kept for the next run"
    return None


def check_engine(choice: str, device: str) -> None:
    """Refuse an engine that cannot run here, before any work (a warm cache gives the same answer)."""
    if choice not in ENGINE_CHOICES:
        raise ConfigError(f"--engine must be one of {', '.join(ENGINE_CHOICES)}. Got {choice!r} instead.")
    why_not = _why_not_onnx(device, True, choice) if choice == "onnx" else None
    if why_not is not None:
        raise ConfigError(f"--engine onnx: {why_not}; use --engine torch or auto")


# Graphs exported by this process, by graph key: a long-lived process (a notebook, a test session)
# advising with several cache folders exports each backbone once, not once per folder.
_EXPORTED: dict[str, tuple[GraphRecord, bytes, BNReference | None]] = {}


class OpenedEngine:
    """An engine and the PyTorch backbone loaded on the way, if any (``--run`` and the ranking reuse it)."""

    def __init__(self, engine: EmbeddingEngine, backbone: Backbone | None) -> None:
        self.engine, self.backbone = engine, backbone


def open_engine(choice: str, backbone_spec: str, weights: str | Path | None, *, device: str, cache: ArrayCache,
                progress: bool, timer: StepTimer) -> OpenedEngine:
    check_engine(choice, device)
    if choice == "torch":
        return _torch_engine(backbone_spec, weights, device, progress, None)
    why_not = _why_not_onnx(device, cache.enabled, choice)
    if why_not is not None:  # auto only: check_engine has refused every such reason for onnx
        logger.info("embedding with PyTorch: %s", why_not)
        return _torch_engine(backbone_spec, weights, device, progress, None)

    graphs = GraphCache(cache) if cache.enabled else None
    key = graph_key(backbone_spec, weights)
    found = graphs.load(key) if graphs is not None else None
    if found is not None:
        record, reference = found
        if record.error is not None:
            return _fall_back(choice, backbone_spec, weights, device, progress, None,
                              f"{record.error} (as recorded in the cache at the last export)")
        assert graphs is not None  # found in it
        return _onnx_engine(choice, backbone_spec, weights, device, progress, graphs.onnx_path(key), record,
                            reference, None)

    with tempfile.TemporaryDirectory(prefix="tl-advise-export-") as folder:
        backbone = None
        if key in _EXPORTED:
            record, graph_bytes, reference = _EXPORTED[key]
            path = Path(folder) / "graph.onnx"
            path.write_bytes(graph_bytes)
        else:
            with timer.step("export"):
                from tl_advise.advisor.measure.images.backbones import load_backbone
                from tl_advise.advisor.measure.images.engines.export import ExportError, export_backbone

                backbone = load_backbone(backbone_spec, weights_file=weights, progress=progress)
                try:
                    record, path, reference = export_backbone(backbone, backbone_spec, Path(folder))
                except ExportError as exc:
                    if graphs is not None:
                        graphs.save(key, GraphRecord(backbone_spec=backbone_spec, error=str(exc)), None, None)
                    return _fall_back(choice, backbone_spec, weights, device, progress, backbone, str(exc))
            _EXPORTED[key] = (record, path.read_bytes(), reference)
        if graphs is not None:
            graphs.save(key, record, path, reference)
        return _onnx_engine(choice, backbone_spec, weights, device, progress, path, record, reference, backbone)


def _onnx_engine(choice: str, backbone_spec: str, weights: str | Path | None, device: str, progress: bool,
                 path: Path, record: GraphRecord, reference: BNReference | None, backbone: Backbone | None
                 ) -> OpenedEngine:
    from tl_advise.advisor.measure.images.engines.onnx_engine import OnnxEngine

    try:
        engine = OnnxEngine(path, record, reference)
    except Exception as exc:  # ONNX Runtime refuses the graph (an operator it lacks, a corrupt file)
        return _fall_back(choice, backbone_spec, weights, device, progress, backbone,
                          f"ONNX Runtime cannot load the graph ({exc.__class__.__name__}: {str(exc)[:200]})")
    return OpenedEngine(engine, backbone)


def _fall_back(choice: str, backbone_spec: str, weights: str | Path | None, device: str, progress: bool,
               backbone: Backbone | None, why: str) -> OpenedEngine:
    if choice == "onnx":
        raise BackboneError(f"--engine onnx: {backbone_spec} cannot run on ONNX Runtime: {why}. "
                            f"Use --engine torch (or auto, which falls back by itself).")
    logger.warning("%s cannot run on ONNX Runtime (%s); embedding with PyTorch", backbone_spec, why)
    return _torch_engine(backbone_spec, weights, device, progress, backbone)


def _torch_engine(backbone_spec: str, weights: str | Path | None, device: str, progress: bool,
                  backbone: Backbone | None) -> OpenedEngine:
    from tl_advise.advisor.measure.device import resolve_device
    from tl_advise.advisor.measure.images.backbones import load_backbone
    from tl_advise.advisor.measure.images.engines.torch_engine import TorchEngine

    if backbone is None:
        backbone = load_backbone(backbone_spec, weights_file=weights, progress=progress)
    return OpenedEngine(TorchEngine(backbone, resolve_device(device)), backbone)
