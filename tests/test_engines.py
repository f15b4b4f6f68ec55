"""The two engines of the advice's forward pass: the exported ONNX graph reproduces eager PyTorch, a cold
advice with the graph cached never imports torch, the cache entry is checked, and every way ONNX Runtime
can be unavailable falls back (``auto``) or stops with a clear message (``onnx``)."""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_class_folder, shared_dataset

from tl_advise.advisor.api import advise
from tl_advise.advisor.data.images.scan import scan_dataset
from tl_advise.advisor.defaults import GRAPHS_KIND
from tl_advise.advisor.measure.cache import ArrayCache
from tl_advise.advisor.measure.images import engines
from tl_advise.advisor.measure.images.backbones import Backbone, load_backbone
from tl_advise.advisor.measure.images.embedding import BNReference, embed_sample
from tl_advise.advisor.measure.images.engines import export as export_module
from tl_advise.advisor.measure.images.engines.graph_cache import GraphCache, GraphRecord, file_sha256, graph_key
from tl_advise.advisor.measure.images.engines.onnx_engine import OnnxEngine
from tl_advise.advisor.measure.images.engines.torch_engine import TorchEngine, bn_reference
from tl_advise.cli.commands import main
from tl_advise.schema.errors import BackboneError, ConfigError

pytestmark = pytest.mark.usefixtures("restore_tl_logging", "one_blas_thread", "clean_environment")

SPEC = "efficientnet_lite0"


@pytest.fixture(scope="module")
def lite() -> Backbone:
    return load_backbone()


@pytest.fixture(scope="module")
def exported(lite: Backbone, tmp_path_factory: pytest.TempPathFactory) -> tuple[OnnxEngine, Path]:
    """The default backbone exported once into a module cache, and an engine on it."""
    cache = ArrayCache(tmp_path_factory.mktemp("graphs"))
    record, path, reference = export_module.export_backbone(lite, SPEC, tmp_path_factory.mktemp("export"))
    GraphCache(cache).save(graph_key(SPEC, None), record, path, reference)
    assert cache.folder is not None
    return OnnxEngine(path, record, reference), cache.folder


@pytest.fixture
def fresh_exports() -> None:
    """Forget what this process exported, so that a test sees a first export."""
    engines._EXPORTED.clear()


@pytest.mark.slow
def test_exported_graph_reproduces_eager_pytorch(lite: Backbone, exported: tuple[OnnxEngine, Path]) -> None:
    engine, _ = exported
    record = engine.record
    reference = bn_reference(lite)
    assert reference is not None and engine.bn_reference() is not None
    assert record.bn_layers == reference.layers and len(record.bn_layers) == 49
    assert record.backbone == lite.info and record.categories == lite.categories
    assert set(record.max_error) == {"features", "logits", "bn_mean", "bn_sq"}
    assert max(record.max_error.values()) < 1e-3
    # Every BN layer's source statistics travel with the graph, so bn_shift needs no torch.
    for ours, theirs in zip(engine.bn_reference().running_var, reference.running_var, strict=True):  # type: ignore[union-attr]
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.slow
def test_onnx_runtime_fuses_every_activation_into_a_convolution(exported: tuple[OnnxEngine, Path],
                                                                tmp_path: Path) -> None:
    """The moment taps read each convolution's output beside its activation; the graph gives those
    activations a convolution of their own, so ONNX Runtime's full CPU optimisation leaves none unfused."""
    import onnx
    import onnxruntime as ort

    engine, _ = exported
    assert engine.record.rewrites["activations_split"] == 33  # lite0: every ReLU6 after a tapped BN
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(str(engine.graph), options, providers=["CPUExecutionProvider"])
    ops = [node.op_type for node in onnx.load(str(tmp_path / "optimised.onnx")).graph.node]
    assert "Conv" in ops and "Clip" not in ops and "ReorderInput" not in ops


@pytest.mark.slow
def test_both_engines_embed_real_images_alike(lite: Backbone, exported: tuple[OnnxEngine, Path],
                                              tmp_path: Path) -> None:
    data = shared_dataset("hymenoptera")
    scan = scan_dataset(data)
    records = scan.records[:12] + scan.records[-12:]  # both classes, photos of several sizes
    by_torch = embed_sample(TorchEngine(lite, torch.device("cpu")), records, root=scan.root, num_workers=0)
    by_onnx = embed_sample(exported[0], records, root=scan.root, num_workers=2, batch_size=8)
    assert by_onnx.forward_passes == len(records) and not by_onnx.failed
    np.testing.assert_array_equal(by_onnx.pixels, by_torch.pixels)  # the same decoded images
    np.testing.assert_allclose(by_onnx.features, by_torch.features, rtol=0, atol=1e-4 * np.abs(by_torch.features).max())
    assert (by_onnx.top1 == by_torch.top1).all()
    np.testing.assert_allclose(by_onnx.max_prob, by_torch.max_prob, atol=1e-4)
    assert by_onnx.bn is not None and by_torch.bn is not None
    for ours, theirs in zip(by_onnx.bn.mean + by_onnx.bn.var, by_torch.bn.mean + by_torch.bn.var, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-3 * (1 + np.abs(theirs).max()))


@pytest.mark.slow
def test_cold_advice_with_the_graph_cached_never_imports_torch(exported: tuple[OnnxEngine, Path],
                                                               tmp_path: Path) -> None:
    """A new dataset (nothing measured), the exported graph in the cache: torch, torchvision and timm stay
    out of the process."""
    _, cache = exported
    data = make_class_folder(tmp_path / "data", {"cat": 6, "dog": 6}, size=(64, 48), seed=3)
    code = (
        "import json, sys\n"
        "from tl_advise.advisor.api import advise\n"
        f"r = advise({str(data)!r}, cache_dir={str(cache)!r}, engine='onnx')\n"
        "print(json.dumps({'modules': [m for m in ('torch', 'torchvision', 'timm') if m in sys.modules],\n"
        "                  'engine': r.sample.engine, 'forward_passes': r.sample.forward_passes,\n"
        "                  'device': r.device, 'timings': r.timings}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    report = json.loads(proc.stdout)
    assert report["modules"] == []
    assert report["engine"] == "onnxruntime" and report["forward_passes"] == 12
    assert report["device"].startswith("cpu (onnxruntime") and "export" not in report["timings"]


@pytest.mark.slow
def test_first_advice_exports_into_the_cache_and_the_next_reuses_it(
        fresh_exports: None, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = make_class_folder(tmp_path / "data", {"cat": 4, "dog": 4}, seed=4)
    cache = tmp_path / "cache"
    with caplog.at_level(logging.INFO, logger="tl_advise"):
        first = advise(data, cache_dir=cache)
    assert first.sample.engine == "onnxruntime" and "export" in first.timings
    assert sum("exported efficientnet_lite0 to ONNX" in r.getMessage() for r in caplog.records) == 1
    graphs = sorted(p.suffix for p in (cache / "v2" / "graphs").iterdir())
    assert graphs == [".json", ".npz", ".onnx"]  # no temporary file left behind
    engines._EXPORTED.clear()  # a new process: only the cache remembers
    second = advise(make_class_folder(tmp_path / "other", {"a": 3, "b": 3}, seed=5), cache_dir=cache)
    assert second.sample.engine == "onnxruntime" and "export" not in second.timings


@pytest.mark.slow
def test_an_altered_graph_file_is_exported_again(fresh_exports: None, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    data = make_class_folder(tmp_path / "data", {"cat": 3, "dog": 3}, seed=6)
    cache = tmp_path / "cache"
    advise(data, cache_dir=cache, engine="onnx")
    onnx_file = next((cache / "v2" / "graphs").glob("*.onnx"))
    onnx_file.write_bytes(onnx_file.read_bytes()[:1000])  # truncated, as by a full disk in another tool
    engines._EXPORTED.clear()
    with caplog.at_level(logging.WARNING, logger="tl_advise"):
        again = advise(make_class_folder(tmp_path / "other", {"a": 3, "b": 3}, seed=7), cache_dir=cache,
                       engine="onnx")
    assert again.sample.engine == "onnxruntime" and "export" in again.timings
    assert any("missing or altered" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("arrays", "warning"), [
    ({"x": np.zeros(3)}, "lacks the array 'layers'"),  # a valid .npz, but not BN statistics
    (BNReference(["other"], [np.zeros(2)], [np.ones(2)], [1e-5]).to_arrays(), "BN statistics of other layers"),
])
def test_graph_entry_whose_bn_statistics_do_not_fit_is_exported_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, arrays: dict[str, np.ndarray], warning: str) -> None:
    cache = ArrayCache(tmp_path / "cache")
    graphs = GraphCache(cache)
    onnx_file = tmp_path / "graph.onnx"
    onnx_file.write_bytes(b"a graph")
    record = GraphRecord(backbone_spec=SPEC, bn_layers=["bn1"], onnx_sha256=file_sha256(onnx_file))
    graphs.save("k", record, onnx_file, BNReference(["bn1"], [np.zeros(2)], [np.ones(2)], [1e-5]))
    assert graphs.load("k") is not None
    np.savez(cache.path_of(GRAPHS_KIND, "k", ".npz"), **arrays)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="tl_advise"):
        assert graphs.load("k") is None  # a miss: the caller exports again and overwrites it
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 1 and warning in messages[0], messages


def _failing_export(calls: list[str]):
    def export(backbone: Backbone, spec: str, folder: Path):  # type: ignore[no-untyped-def]
        calls.append(spec)
        raise export_module.ExportError("an operator without an ONNX form (for the test)")

    return export


@pytest.mark.slow
def test_a_backbone_that_does_not_export_falls_back_once_and_is_not_retried(
        fresh_exports: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []
    monkeypatch.setattr(export_module, "export_backbone", _failing_export(calls))
    data = make_class_folder(tmp_path / "data", {"cat": 3, "dog": 3}, seed=8)
    cache = tmp_path / "cache"
    with caplog.at_level(logging.INFO, logger="tl_advise"):
        result = advise(data, cache_dir=cache)
    assert result.sample.engine == "torch" and calls == [SPEC]
    fallbacks = [r for r in caplog.records if "cannot run on ONNX Runtime" in r.getMessage()]
    assert len(fallbacks) == 1 and "an operator without an ONNX form" in fallbacks[0].getMessage()
    # The next advice reads the recorded failure instead of exporting again; --engine onnx refuses clearly.
    advise(make_class_folder(tmp_path / "other", {"a": 3, "b": 3}, seed=9), cache_dir=cache)
    assert calls == [SPEC]
    with pytest.raises(BackboneError, match=r"cannot run on ONNX Runtime.*--engine torch"):
        advise(make_class_folder(tmp_path / "third", {"a": 3, "b": 3}, seed=10), cache_dir=cache, engine="onnx")


def test_engine_onnx_without_onnxruntime_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real_find_spec(name, *a))
    data = make_class_folder(tmp_path / "data", {"cat": 3, "dog": 3}, seed=11)
    code = main([str(data), "--engine", "onnx", "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert code == 2 and "pip install onnxruntime" in err and "Traceback" not in err
    assert not (tmp_path / "cache").exists()  # refused before any work


def test_engine_onnx_on_cuda_and_unknown_engines_are_refused() -> None:
    with pytest.raises(ConfigError, match="runs on the CPU"):
        engines.check_engine("onnx", "cuda")
    with pytest.raises(ConfigError, match="--engine must be one of auto, onnx, torch"):
        engines.check_engine("tensorrt", "cpu")
    engines.check_engine("auto", "cuda")  # auto falls back instead


@pytest.mark.slow
def test_engine_torch_and_no_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_class_folder(tmp_path / "data", {"cat": 3, "dog": 3}, seed=12)
    code = main([str(data), "--engine", "torch", "--format", "json", "--cache-dir", str(tmp_path / "cache")])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["sample"]["engine"] == "torch" and report["device"].startswith("cpu (")
    assert not (tmp_path / "cache" / "v2" / "graphs").exists()
    # Without a cache, auto embeds with PyTorch (nothing could keep an export); onnx exports for this run.
    assert advise(data, use_cache=False).sample.engine == "torch"
    assert advise(data, use_cache=False, engine="onnx").sample.engine == "onnxruntime"


@pytest.mark.slow
@pytest.mark.shared
@pytest.mark.parametrize("name", ["hymenoptera", "eurosat_small"])
def test_the_signals_do_not_depend_on_the_engine(name: str, exported: tuple[OnnxEngine, Path],
                                                 tmp_path: Path) -> None:
    """One close and one far dataset: the same score within 0.01, label, strategy and warnings."""
    data = shared_dataset(name)
    _, graphs = exported
    by_torch = advise(data, cache_dir=tmp_path / "torch", engine="torch")
    by_onnx = advise(data, cache_dir=graphs, engine="onnx")
    assert by_torch.sample.engine == "torch" and by_onnx.sample.engine == "onnxruntime"
    assert abs(by_onnx.similarity.score - by_torch.similarity.score) < 0.01
    assert by_onnx.similarity.label == by_torch.similarity.label
    rec_onnx, rec_torch = by_onnx.recommendation, by_torch.recommendation
    assert (rec_onnx.strategy, rec_onnx.rule_id) == (rec_torch.strategy, rec_torch.rule_id)
    assert [w.id for w in rec_onnx.warnings] == [w.id for w in rec_torch.warnings]
