"""The PyTorch engine: the backbone run eagerly, BN-layer inputs read by forward pre-hooks.

It runs wherever torch does (CUDA included) and embeds for the runners; the advice uses it when the
ONNX Runtime engine is unavailable or asked against (``--engine torch``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from tl_advise.advisor.measure.cache import digest
from tl_advise.advisor.measure.device import describe
from tl_advise.advisor.measure.images.backbones import Backbone
from tl_advise.advisor.measure.images.embedding import SUBSAMPLE_FROM_PX, Batch, BNReference
from tl_advise.advisor.measure.images.preprocess import PIXELS, load_for_network
from tl_advise.advisor.versions import weights_identity
from tl_advise.schema.models import BackboneInfo, Preprocessing

# path, preprocessing -> (network input, pixel baseline): ``load_for_network`` or a shared decoder's ``load``
Loader = Callable[[str, Preprocessing], tuple[np.ndarray, np.ndarray]]


def backbone_key(backbone: Backbone) -> str:
    """Identity of what produces the numbers: architecture, weights and preprocessing."""
    info = backbone.info
    weights = weights_identity(info.weights.removeprefix("file:")) if info.source == "file" else info.weights
    return digest(info.name, weights, info.preprocessing.model_dump(), info.feature_dim)


def _statistic(value: torch.Tensor | None) -> np.ndarray:
    # batchnorm_layers() keeps only the layers with running statistics: never None here.
    return cast(torch.Tensor, value).detach().double().cpu().numpy()


def bn_reference(backbone: Backbone) -> BNReference | None:
    layers = backbone.batchnorm_layers()
    if not layers:
        return None
    return BNReference(
        layers=[name for name, _ in layers],
        running_mean=[_statistic(m.running_mean) for _, m in layers],
        running_var=[_statistic(m.running_var) for _, m in layers],
        eps=[float(m.eps) for _, m in layers],
    )


def input_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image and channel: the mean and mean square of a BN layer's input, (n, C) each."""
    x = x.float()
    if x.dim() == 4 and min(x.shape[2:]) >= SUBSAMPLE_FROM_PX:
        x = x[:, :, ::2, ::2]  # every other row and column (SUBSAMPLE_FROM_PX)
    dims = tuple(range(2, x.dim()))
    return x.mean(dim=dims), (x * x).mean(dim=dims)


class _ImageDataset(Dataset[tuple[torch.Tensor, np.ndarray, int, str]]):
    """Decodes one image in a worker: the network input, the pixel baseline, and any decode error."""

    def __init__(self, paths: Sequence[Path], backbone: Backbone, load: Loader = load_for_network) -> None:
        self.paths = list(paths)
        self.preprocessing = backbone.preprocessing
        self.load = load

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, np.ndarray, int, str]:
        try:
            x, pixels = self.load(str(self.paths[index]), self.preprocessing)
            return torch.from_numpy(x), pixels, index, ""
        except Exception as exc:  # a file whose header read fine but whose data does not decode
            size = self.preprocessing.input_size
            return torch.zeros(3, size, size), np.zeros(PIXELS, np.uint8), index, f"cannot decode image ({exc})"


class _BNRecorder:
    """Forward pre-hooks that keep each BN layer's per-image input moments for the current batch."""

    def __init__(self, layers: list[tuple[str, nn.modules.batchnorm._BatchNorm]]) -> None:
        self.mean: list[torch.Tensor] = [torch.empty(0)] * len(layers)
        self.sq: list[torch.Tensor] = [torch.empty(0)] * len(layers)
        self.handles = [m.register_forward_pre_hook(self._hook(i)) for i, (_, m) in enumerate(layers)]

    def _hook(self, i: int):
        def record(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            self.mean[i], self.sq[i] = input_moments(inputs[0])

        return record

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


class TorchEngine:
    """``EmbeddingEngine`` over an eager PyTorch backbone on ``device``. ``load`` decodes an image for the
    network (``load_for_network``; the ranking shares one decode between candidates: ``shared_decode``, with
    ``num_workers=0``, as a worker's decodes stay in the worker)."""

    name = "torch"
    default_batch_size = 32

    def __init__(self, backbone: Backbone, device: torch.device, load: Loader = load_for_network) -> None:
        self.backbone = backbone
        self.torch_device = device
        self.load = load
        self.info: BackboneInfo = backbone.info
        self.categories = backbone.categories

    @property
    def cache_key(self) -> str:
        return backbone_key(self.backbone)  # the same key as before there were two engines

    @property
    def device(self) -> str:
        return describe(self.torch_device)

    def bn_reference(self) -> BNReference | None:
        return bn_reference(self.backbone)

    def batches(self, paths: Sequence[Path], *, batch_size: int, num_workers: int,
                collect_bn: bool) -> Iterator[Batch]:
        backbone, device = self.backbone, self.torch_device
        backbone.eval().to(device)
        backbone.body.to(memory_format=torch.channels_last)  # ~1.7× on CPU for these networks
        loader = DataLoader(
            _ImageDataset(paths, backbone, self.load), batch_size=batch_size, shuffle=False,
            num_workers=num_workers if len(paths) > batch_size else 0, pin_memory=device.type == "cuda",
            # Its own generator: embedding never draws from the global RNG, so a seeded run that follows
            # sees the same random numbers whether the embeddings came from the cache or not.
            generator=torch.Generator().manual_seed(0),
        )
        recorder = _BNRecorder(backbone.batchnorm_layers()) if collect_bn else None
        use_amp = device.type == "cuda"
        try:
            with torch.inference_mode():
                for images, pixels, index, errors in loader:
                    x = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
                    with torch.autocast(device.type, enabled=use_amp):
                        started = time.perf_counter()
                        features = backbone.body(x)
                        if device.type == "cuda":
                            torch.cuda.synchronize(device)
                        body_seconds = time.perf_counter() - started
                        logits = backbone.head(features)
                    yield Batch(
                        index=index.numpy(), errors=list(errors), features=features.float().cpu().numpy(),
                        logits=logits.float().cpu().numpy(), pixels=pixels.numpy(),
                        bn_mean=[m.double().cpu().numpy() for m in recorder.mean] if recorder else [],
                        bn_sq=[s.double().cpu().numpy() for s in recorder.sq] if recorder else [],
                        body_seconds=None if recorder else body_seconds,
                    )
        finally:
            if recorder is not None:
                recorder.remove()
