"""A backbone → one ONNX graph that computes, in a single pass, everything the similarity needs: the
pooled features, the source-head logits, and per image the mean and mean square of every BN layer's
input (the statistics the PyTorch engine's hooks read), then checked against eager PyTorch.

The moments are read *after* each BN layer and mapped back through its inverse affine transform
(x = (y − β)·σ/γ + μ, per channel): a second consumer of the convolution's output would keep
ONNX Runtime from folding the BN into the convolution, which costs a third of the speed measured here.
A layer with |γ| below ``GAMMA_FLOOR`` is not invertible in float32 and is read before the BN instead.
Subsampling (every other row and column of large maps) is an average pool of kernel 1 and stride 2,
which selects exactly the positions the hooks select and stays in ONNX Runtime's blocked layout.
After export the graph is rewritten for ONNX Runtime's CPU kernels (``optimise``): padding folded into
the convolutions, and the activations the taps split from their convolutions given one of their own.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tl_advise.advisor.measure.images.backbones import Backbone
from tl_advise.advisor.measure.images.embedding import SUBSAMPLE_FROM_PX, BNReference
from tl_advise.advisor.measure.images.engines.graph_cache import EXPORT_LIBRARIES, GraphRecord, file_sha256
from tl_advise.advisor.measure.images.engines.torch_engine import backbone_key, bn_reference, input_moments
from tl_advise.advisor.versions import package_version

if TYPE_CHECKING:
    import onnx

logger = logging.getLogger(__name__)

OPSET = 17
GAMMA_FLOOR = 1e-3
# Graph vs eager PyTorch, |difference| / (1 + max |eager|) per output group: float32 reassociation
# stays near 1e-6; a wrong graph is off by far more.
TOLERANCE = 1e-3
VERIFY_IMAGES = 4


class ExportError(Exception):
    """The backbone cannot be exported, or its graph does not reproduce eager PyTorch."""


def _output_site(bn: nn.modules.batchnorm._BatchNorm) -> tuple[nn.Module, bool] | None:
    """Where the BN layer's own output (before any activation) can be read: (module, whether it is that
    module's output rather than its input); None when the layer is of a kind not known here."""
    if type(bn) in (nn.BatchNorm2d, nn.SyncBatchNorm):
        return bn, True
    drop, act = getattr(bn, "drop", None), getattr(bn, "act", None)
    if isinstance(drop, nn.Module) and isinstance(act, nn.Module):  # timm's BatchNormAct2d: BN, drop, act
        return drop, False
    return None


class _MomentTaps:
    """Hooks that append (mean, mean square) of every BN layer's input to ``sink``, in forward order."""

    def __init__(self, backbone: Backbone, body: nn.Module) -> None:
        self.sink: list[tuple[torch.Tensor, torch.Tensor]] = []
        # ``body`` may be a copy of the backbone's: the same BN layers by name, in the same order.
        self.handles = [self._register(body.get_submodule(name)) for name, _ in backbone.batchnorm_layers()]

    def _register(self, bn: nn.Module) -> torch.utils.hooks.RemovableHandle:
        assert isinstance(bn, nn.modules.batchnorm._BatchNorm)
        assert bn.running_mean is not None and bn.running_var is not None
        site = _output_site(bn)
        if site is None or not bn.affine or not bool((bn.weight.detach().abs() >= GAMMA_FLOOR).all()):
            return bn.register_forward_pre_hook(lambda _m, inputs: self._record(inputs[0]))
        scale = (torch.sqrt(bn.running_var + bn.eps) / bn.weight).detach().reshape(1, -1)
        shift = (bn.running_mean - bn.bias * scale.flatten()).detach().reshape(1, -1)
        module, is_output = site

        def inverted(y: torch.Tensor) -> None:
            mean, sq = self._moments(y)
            self.sink.append((scale * mean + shift, scale * scale * sq + 2 * scale * shift * mean + shift * shift))

        if is_output:
            return module.register_forward_hook(lambda _m, _inputs, output: inverted(output))
        return module.register_forward_pre_hook(lambda _m, inputs: inverted(inputs[0]))

    @staticmethod
    def _moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 4:
            raise ExportError(f"a BN layer has {x.dim()}-d input; the graph reads 4-d maps only")
        if min(x.shape[2:]) >= SUBSAMPLE_FROM_PX:
            x = F.avg_pool2d(x, kernel_size=1, stride=2)
        return F.adaptive_avg_pool2d(x, 1).flatten(1), F.adaptive_avg_pool2d(x * x, 1).flatten(1)

    def _record(self, x: torch.Tensor) -> None:
        self.sink.append(self._moments(x))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


class _StaticSamePadConv(nn.Module):
    """timm's TF-"same" convolution with its padding fixed for one input size: a constant ``Pad`` that
    ONNX Runtime folds into the convolution, where the dynamic form (shape arithmetic, then ``Pad``)
    stays a separate layout round trip on the CPU — 15 % of the forward time measured here."""

    def __init__(self, conv: nn.Conv2d, pads: list[int]) -> None:
        super().__init__()
        self.conv, self.pads = conv, pads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        return F.conv2d(F.pad(x, self.pads), c.weight, c.bias, c.stride, 0, c.dilation, c.groups)


def with_static_padding(body: nn.Module, input_size: int) -> nn.Module:
    """``body`` (a copy when anything changes) with every dynamic same-padding convolution made static for
    ``input_size`` inputs. The graph takes that size only, which is all the advice ever feeds it."""
    from timm.layers import Conv2dSame
    from timm.layers.padding import pad_same_arg

    dynamic = [name for name, m in body.named_modules() if isinstance(m, Conv2dSame)]
    if not dynamic:
        return body
    body = copy.deepcopy(body)
    sizes: dict[str, list[int]] = {}
    handles = [body.get_submodule(name).register_forward_pre_hook(
        lambda _m, inputs, name=name: sizes.__setitem__(name, list(inputs[0].shape[-2:]))) for name in dynamic]
    try:
        with torch.inference_mode():
            body(torch.zeros(1, 3, input_size, input_size))
    finally:
        for handle in handles:
            handle.remove()
    for name in dynamic:
        conv = body.get_submodule(name)
        assert isinstance(conv, nn.Conv2d)
        pads = pad_same_arg(sizes[name], list(conv.kernel_size), list(conv.stride), list(conv.dilation))
        parent_name, _, child = name.rpartition(".")
        setattr(body.get_submodule(parent_name) if parent_name else body, child, _StaticSamePadConv(conv, pads))
    return body


class _Graph(nn.Module):
    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.body = with_static_padding(backbone.body, backbone.preprocessing.input_size)
        self.head = backbone.head
        self.taps = _MomentTaps(backbone, self.body)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.taps.sink.clear()
        features = self.body(images)
        logits = self.head(features)
        return (features, logits, *(t for pair in self.taps.sink for t in pair))


def output_names(n_bn: int) -> list[str]:
    return ["features", "logits", *(f"bn_{kind}_{i}" for i in range(n_bn) for kind in ("mean", "sq"))]


def verification_batch(backbone: Backbone) -> np.ndarray:
    """Seeded noise and a smooth gradient, normalised like real inputs: activations of a realistic range."""
    size = backbone.preprocessing.input_size
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (VERIFY_IMAGES, size, size, 3)).astype(np.float32)
    pixels[0] = np.linspace(0, 255, size, dtype=np.float32)[None, :, None]
    x = (pixels / 255 - np.array(backbone.preprocessing.mean, np.float32)) / np.array(backbone.preprocessing.std,
                                                                                   np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2).astype(np.float32))


def eager_outputs(backbone: Backbone, x: np.ndarray) -> list[np.ndarray]:
    """What the PyTorch engine computes for ``x``: features, logits, then each BN layer's input moments."""
    moments: list[tuple[torch.Tensor, torch.Tensor]] = []
    handles = [bn.register_forward_pre_hook(lambda _m, inputs: moments.append(input_moments(inputs[0])))
               for _, bn in backbone.batchnorm_layers()]
    try:
        with torch.inference_mode():
            features = backbone.body(torch.from_numpy(x))
            logits = backbone.head(features)
    finally:
        for handle in handles:
            handle.remove()
    return [features.numpy(), logits.numpy(), *(t.numpy() for pair in moments for t in pair)]


def max_errors(graph: list[np.ndarray], eager: list[np.ndarray]) -> dict[str, float]:
    def error(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a.astype(np.float64) - b).max() / (1.0 + np.abs(b).max()))

    groups = {"features": error(graph[0], eager[0]), "logits": error(graph[1], eager[1])}
    if len(eager) > 2:
        groups["bn_mean"] = max(error(g, e) for g, e in zip(graph[2::2], eager[2::2], strict=True))
        groups["bn_sq"] = max(error(g, e) for g, e in zip(graph[3::2], eager[3::2], strict=True))
    return groups


# Activations ONNX Runtime can fuse into a convolution on the CPU (its conv-activation fusion).
FUSABLE_ACTIVATIONS = ("Clip", "Relu", "LeakyRelu", "HardSigmoid", "Sigmoid", "Tanh")


def optimise(raw: Path, out: Path) -> dict[str, int]:
    """ONNX Runtime's basic (hardware-independent) graph optimisations, constant folding among them, then
    the two rewrites below; returns how often each applied."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(out)
    options.log_severity_level = 3
    ort.InferenceSession(str(raw), options, providers=["CPUExecutionProvider"])
    model = onnx.load(str(out))
    graph = model.graph
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    counts = {"pads_folded": _fold_pads(graph, constants),
              "activations_split": _split_shared_activations(graph, constants)}
    used = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in used]:  # the folded pads' amounts
        graph.initializer.remove(init)
    onnx.save(model, str(out))
    return counts


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consumers


def _fold_pads(graph: onnx.GraphProto, constants: dict[str, np.ndarray]) -> int:
    """Every zero ``Pad`` that feeds a convolution folded into the convolution's own padding: ONNX Runtime
    keeps such a ``Pad`` as a separate pass over the map otherwise."""
    from onnx import helper

    consumers = _consumers(graph)
    folded = 0
    for pad in [n for n in graph.node if n.op_type == "Pad"]:
        users = consumers.get(pad.output[0], [])
        attrs = {a.name: helper.get_attribute_value(a) for a in pad.attribute}
        amounts = constants.get(pad.input[1]) if len(pad.input) > 1 else None
        value = constants.get(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else np.zeros(1)
        if (len(users) != 1 or users[0].op_type != "Conv" or attrs.get("mode", b"constant") != b"constant"
                or amounts is None or value is None or value.any() or amounts.size != 8
                or amounts[[0, 1, 4, 5]].any() or (amounts < 0).any()):
            continue
        conv = users[0]
        conv_attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        if conv_attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", b""):
            continue
        top, left, bottom, right = list(conv_attrs.get("pads", [0, 0, 0, 0]))
        pads = [top + int(amounts[2]), left + int(amounts[3]), bottom + int(amounts[6]), right + int(amounts[7])]
        for attribute in [a for a in conv.attribute if a.name == "pads"]:
            conv.attribute.remove(attribute)
        conv.attribute.append(helper.make_attribute("pads", pads))
        conv.input[0] = pad.input[0]
        graph.node.remove(pad)
        folded += 1
    return folded


def _split_shared_activations(graph: onnx.GraphProto, constants: dict[str, np.ndarray]) -> int:
    """An identity depthwise 1×1 convolution before every activation whose convolution output something
    else also reads (here: the moment taps). ONNX Runtime fuses an activation into the convolution before
    it only when that convolution has no other reader; otherwise the activation leaves the blocked (NCHWc)
    layout and comes back, two reorders per layer. The identity convolution (weight 1, no bias: exact)
    takes the activation instead and stays blocked — 12 % of the forward time measured here."""
    from onnx import helper, numpy_helper

    consumers = _consumers(graph)
    producers = {name: node for node in graph.node for name in node.output}
    split = 0
    for act in [n for n in graph.node if n.op_type in FUSABLE_ACTIVATIONS]:
        source = producers.get(act.input[0])
        weight = constants.get(source.input[1]) if source is not None and source.op_type == "Conv" else None
        if weight is None or weight.ndim != 4 or len(consumers.get(act.input[0], [])) < 2:
            continue
        channels = weight.shape[0]
        ones = numpy_helper.from_array(np.ones((channels, 1, 1, 1), np.float32), f"{act.output[0]}_identity_w")
        graph.initializer.append(ones)
        mapped = f"{act.output[0]}_identity"
        identity = helper.make_node("Conv", [act.input[0], ones.name], [mapped], name=mapped, group=channels,
                                    kernel_shape=[1, 1])
        act.input[0] = mapped
        graph.node.insert(list(graph.node).index(act), identity)
        split += 1
    return split


def export_backbone(backbone: Backbone, backbone_spec: str,
                    folder: Path) -> tuple[GraphRecord, Path, BNReference | None]:
    """Export ``backbone`` into ``folder`` and verify it with ONNX Runtime against eager PyTorch."""
    import onnxruntime as ort

    start = time.perf_counter()
    backbone.eval().to("cpu")
    reference = bn_reference(backbone)
    n_bn = len(reference.layers) if reference else 0
    names = output_names(n_bn)
    graph = _Graph(backbone).eval()
    raw, path = folder / "traced.onnx", folder / "graph.onnx"
    size = backbone.preprocessing.input_size
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            # The TorchScript-based exporter: no onnxscript needed, and it traces the hooks as written.
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, (torch.zeros(2, 3, size, size),), str(raw), dynamo=False,
                              input_names=["images"], output_names=names, opset_version=OPSET,
                              dynamic_axes={name: {0: "batch"} for name in ("images", *names)})
    except ExportError:
        raise
    except Exception as exc:  # an operator without an ONNX form, a tracing failure …
        raise ExportError(f"torch.onnx.export failed: {exc.__class__.__name__}: {str(exc).splitlines()[0]}") from exc
    finally:
        graph.taps.remove()
    try:
        rewrites = optimise(raw, path)
    except Exception as exc:  # an operator ONNX Runtime lacks
        raise ExportError(f"ONNX Runtime cannot load the exported graph: {exc.__class__.__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    logger.debug("graph rewritten for ONNX Runtime: %s", rewrites)
    x = verification_batch(backbone)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    errors = max_errors(session.run(names, {"images": x}), eager_outputs(backbone, x))
    worst = max(errors, key=lambda k: errors[k])
    if not errors[worst] <= TOLERANCE:  # also catches NaN
        raise ExportError(f"the exported graph differs from eager PyTorch ({worst}: relative error "
                          f"{errors[worst]:.2e} > {TOLERANCE:g})")
    record = GraphRecord(
        backbone_spec=backbone_spec, backbone=backbone.info, categories=backbone.categories,
        torch_key=backbone_key(backbone), bn_layers=reference.layers if reference else [], opset=OPSET,
        onnx_sha256=file_sha256(path), max_error=errors, rewrites=rewrites,
        export_s=round(time.perf_counter() - start, 2),
        versions={name: package_version(name) for name in (*EXPORT_LIBRARIES, "onnxruntime")},
    )
    logger.info("exported %s to ONNX in %.1f s (largest relative difference from PyTorch %.1e)",
                backbone.name, record.export_s, errors[worst])
    return record, path, reference
