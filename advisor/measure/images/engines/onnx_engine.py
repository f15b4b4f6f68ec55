"""The ONNX Runtime engine: the exported graph (``engines.export``) on the CPU, images decoded by a thread
pool one batch ahead of the forward pass. Imports neither torch nor torchvision nor timm.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tl_advise.advisor.measure.cache import digest
from tl_advise.advisor.measure.images.embedding import Batch, BNReference
from tl_advise.advisor.measure.images.engines.graph_cache import GRAPH_FORMAT, GraphRecord
from tl_advise.advisor.measure.images.preprocess import PIXELS, load_for_network
from tl_advise.schema.models import BackboneInfo, Preprocessing

_Decoded = tuple[np.ndarray | None, np.ndarray, str]


def cpu_threads() -> int:
    """The CPUs this process may run on (a container's or taskset's limit, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _decode(path: Path, pre: Preprocessing) -> _Decoded:
    try:
        x, pixels = load_for_network(str(path), pre)
        return x, pixels, ""
    except Exception as exc:  # a file whose header read fine but whose data does not decode
        return None, np.zeros(PIXELS, np.uint8), f"cannot decode image ({exc})"


class OnnxEngine:
    """``EmbeddingEngine`` over an exported graph with ONNX Runtime's CPU execution provider."""

    name = "onnxruntime"
    # Peak memory grows with the batch (the arena keeps the largest activations of a batch: 370 MB at 8,
    # 550 MB at 16, 940 MB at 32 measured here) while throughput does not (66, 65, 68 img/s).
    default_batch_size = 8

    def __init__(self, graph: Path, record: GraphRecord, reference: BNReference | None,
                 threads: int | None = None) -> None:
        import onnxruntime as ort

        assert record.backbone is not None and record.torch_key is not None
        self.graph, self.record = graph, record
        self.info: BackboneInfo = record.backbone
        self.categories = record.categories
        self._reference = reference
        self.threads = threads or cpu_threads()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        # Decoding and the forward pass take turns on the cores (``batches``): threads that spin between
        # runs would only take CPU from the decoders (36 against 40 CPU-ms per image measured here).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # its own warnings are about graph internals, not the user's data
        self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        self.version = ort.__version__
        self.outputs = [o.name for o in self.session.get_outputs()]

    @property
    def cache_key(self) -> str:
        return digest(self.record.torch_key, self.name, GRAPH_FORMAT)

    @property
    def device(self) -> str:
        return f"cpu (onnxruntime {self.version}, {self.threads} thread{'' if self.threads == 1 else 's'})"

    def bn_reference(self) -> BNReference | None:
        return self._reference

    def batches(self, paths: Sequence[Path], *, batch_size: int, num_workers: int,
                collect_bn: bool) -> Iterator[Batch]:
        """Two batches decoded in parallel, then their forward passes, in turn: on a small CPU this beat
        decoding the next batch during the forward pass (51 against 45 img/s), which only made the
        decoders and ONNX Runtime's threads compete for the same cores."""
        pre = self.info.preprocessing
        wanted = self.outputs if collect_bn else self.outputs[:2]
        blank = np.zeros((3, pre.input_size, pre.input_size), np.float32)
        step = 2 * batch_size
        with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
            for start in range(0, len(paths), step):
                decoded = list(pool.map(lambda p: _decode(p, pre), paths[start:start + step]))
                for offset in range(0, len(decoded), batch_size):
                    part = decoded[offset:offset + batch_size]
                    images = np.stack([x if x is not None else blank for x, _, _ in part])
                    out = self.session.run(wanted, {"images": images})
                    yield Batch(
                        index=np.arange(start + offset, start + offset + len(part)),
                        errors=[e for _, _, e in part], features=out[0], logits=out[1],
                        pixels=np.stack([p for _, p, _ in part]),
                        bn_mean=out[2::2] if collect_bn else [], bn_sq=out[3::2] if collect_bn else [],
                    )
